package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/tapes-go/tapes/runtimemetrics"
)

// errVersion is what -version makes flag parsing return: mainCode prints
// the version on stdout and exits 0, whichever command was given.
var errVersion = errors.New("version requested")

func versionMain(args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usageError{errUnexpectedArgs(args)}
	}
	printVersion(stdout)
	return nil
}

// printVersion prints what runtime/debug.ReadBuildInfo knows: the module
// version (a tag for `go install ...@v1.2.3`, "(devel)" for a build in a
// checkout), the Go version and the VCS stamp go build records.
func printVersion(w io.Writer) {
	bi := runtimemetrics.ReadBuild()
	fmt.Fprintf(w, "tapes-host %s\n", bi.Version)
	fmt.Fprintf(w, "  go:       %s %s/%s\n", bi.GoVersion, bi.GOOS, bi.GOARCH)
	if bi.Revision != "" {
		dirty := ""
		if bi.Modified {
			dirty = " (modified)"
		}
		fmt.Fprintf(w, "  revision: %s%s\n", bi.Revision, dirty)
	}
	if !bi.Time.IsZero() {
		fmt.Fprintf(w, "  time:     %s\n", bi.Time.UTC().Format("2006-01-02T15:04:05Z"))
	}
}
