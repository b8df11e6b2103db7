package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/tapes-go/tapes/shm"
)

const inspectUsage = `Usage: tapes-host inspect [PATH]

Prints the state of a shm file without draining it or changing it: format
version, configuration, every worker slot (pid, liveness, ring fill, drops) and
the metrics each worker defined. PATH defaults to the default shm file.
Exits 1 if the file cannot be read or is not a valid tapes shm file.
`

func inspectMain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tapes-host inspect", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() { fmt.Fprint(stderr, inspectUsage) }
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp { // Parse has printed the usage
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 1 {
		return usageError{errUnexpectedArgs(fs.Args()[1:])}
	}
	path := fs.Arg(0)
	if path == "" {
		var err error
		if path, err = shm.DefaultPath(); err != nil {
			return err
		}
	}
	rep, err := shm.Inspect(path)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	return rep.WriteText(stdout)
}
