package main

import (
	"context"
	"os"
	"testing"
)

// TestMain lets the test binary serve as its own plugin process: the
// supervisor under test re-executes os.Executable with pluginWorkerCmd.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == pluginWorkerCmd {
		os.Exit(mainCode(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(builds.Run(m))
}
