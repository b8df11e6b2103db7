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
//	tapes-host version                      print the version and build information (also -version)
//
// SIGTERM and SIGINT stop it cleanly (drain, report one last time, exit 0);
// SIGHUP re-reads the -config file and applies the settings that can change
// while running (-log-level, -interval; the plugin settings restart every
// plugin process on the new set), logging every other change as needing a
// restart.
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
  tapes-host version                             print the version and build information

Workers find the host through the environment variable TAPES_SHM (printed at start).
Endpoints: http://ADDR/metrics (Prometheus text 0.0.4), http://ADDR/stats (JSON),
/healthz and /-/healthy (200 while draining works), /readyz and /-/ready (200 once
draining, plugins loaded and the shm file intact).

Signals: SIGTERM/SIGINT stop cleanly (drain everything, report one last time, exit 0).
SIGHUP re-reads -config: -log-level and -interval take effect at once; a change to
-plugin, -plugin-interval, -plugin-timeout, -plugin-memory or -wasm-cache restarts the
plugins on the new settings, one to -remote-write-url, -otlp-url or their push settings
restarts the pushers; a change to any other setting is logged as needing a restart and ignored; an invalid file is logged
and ignored. Exit codes: 0 clean stop, 1 runtime failure, 2 invalid usage.

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
		case "run", "inspect", "demo", "version", demoWorkerCmd, pluginWorkerCmd:
			cmd, args = args[0], args[1:]
		case "help":
			args = []string{"-h"}
		}
	}
	var err error
	switch cmd {
	case "inspect":
		err = inspectMain(args, stdout, stderr)
	case "version":
		err = versionMain(args, stdout)
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
	case errors.Is(err, errVersion):
		printVersion(stdout)
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
