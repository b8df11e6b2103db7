// Command tapes-host owns the canonical metrics registry of a machine: it
// drains the shared-memory rings that worker processes write, runs
// WebAssembly plugins that record through the tapes host ABI, and reports
// everything as Prometheus text and JSON over HTTP, to StatsD and as a JSON
// stream.
//
//	tapes-host [flags]                      drain workers and report (default)
//	tapes-host run [flags] -workers N -- CMD [ARGS...]
//	                                        also start N workers running CMD, restart them when
//	                                        they die, forward SIGTERM and drain them to the end
//	tapes-host inspect [PATH]               print a shm file's state without draining it
//	tapes-host demo [flags]                 host + demo workers + the example C plugin
//
// Every flag can also come from a JSON config file (-config); invalid
// configuration prints one error line and exits with code 2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usageHeader = `tapes-host drains the shared-memory rings of worker processes and the metrics of
WebAssembly plugins into one registry, and reports it.

Usage:
  tapes-host [flags]                             drain workers and report (default)
  tapes-host run [flags] -workers N -- CMD ARGS  supervise N workers running CMD (TAPES_SHM set for them)
  tapes-host inspect [PATH]                      print a shm file's state without draining it
  tapes-host demo [flags]                        host + 2 demo workers + the example C plugin

Workers find the host through the environment variable TAPES_SHM (printed at start).
Endpoints: http://ADDR/metrics (Prometheus text 0.0.4) and http://ADDR/stats (JSON).

Flags:
`

func main() {
	os.Exit(mainCode(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// mainCode runs the command and returns the process exit code: 0 on a clean
// stop, 1 on a runtime failure, 2 on invalid usage or configuration.
func mainCode(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := ""
	if len(args) > 0 {
		switch args[0] {
		case "run", "inspect", "demo", demoWorkerCmd, pluginWorkerCmd:
			cmd, args = args[0], args[1:]
		case "help":
			args = []string{"-h"}
		}
	}
	var err error
	switch cmd {
	case "inspect":
		err = inspectMain(args, stdout, stderr)
	case demoWorkerCmd:
		err = demoWorkerMain(ctx, args)
	case pluginWorkerCmd:
		err = pluginWorkerMain(args)
	case "run":
		err = runMain(ctx, args, stdout, stderr)
	case "demo":
		err = demoMain(ctx, args, stdout, stderr)
	default:
		err = serveMain(ctx, args, stdout, stderr)
	}
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "tapes-host: %v\n", ue.err)
		return 2
	default:
		fmt.Fprintf(stderr, "tapes-host: %v\n", err)
		return 1
	}
}

// usageError marks an error in the command line or config file (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }
