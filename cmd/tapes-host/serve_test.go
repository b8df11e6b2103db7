package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// A stop that arrives before the host's first wait is still logged and
// still drains: the reason to stop never depends on when the signal came.
func TestStopBeforeFirstWaitIsLogged(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stderr bytes.Buffer
	args := []string{"-shm", filepath.Join(t.TempDir(), "s.shm"), "-http", "127.0.0.1:0"}
	if err := serveMain(ctx, args, io.Discard, &stderr); err != nil {
		t.Fatalf("serveMain: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "stopping: draining and reporting one last time") {
		t.Errorf("no stop reason logged:\n%s", stderr.String())
	}
}
