package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthFollowsItsHooks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.shm")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	// Held open, as the host's mapping holds it: a file made after the
	// removal below then cannot get its inode back.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hl := newHealth()
	now := time.Unix(1000, 0)
	hl.now = func() time.Time { return now }
	var passes atomic.Uint64
	mux := http.NewServeMux()
	for p, hd := range hl.routes() {
		mux.Handle(p, hd)
	}
	probe := func(p string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		return rec.Code, rec.Body.String()
	}
	expect := func(what string, health, ready int, reason string) {
		t.Helper()
		check := func(p string, want int, ok string) {
			code, body := probe(p)
			if code != want || (code == 200 && body != ok+"\n") || (code != 200 && !strings.Contains(body, reason)) {
				t.Errorf("%s: %s = %d %q, want %d (%q)", what, p, code, body, want, reason)
			}
		}
		check("/healthz", health, "healthy")
		check("/-/healthy", health, "healthy")
		check("/readyz", ready, "ready")
		check("/-/ready", ready, "ready")
	}
	expect("before the shm file", 503, 503, "shm file not open")
	hl.shmOpened(path, passes.Load)
	expect("plugins loading", 200, 503, "")
	hl.pluginsLoaded()
	expect("running", 200, 200, "")

	// The heartbeat: no pass for longer than stallAfter is a stall; a
	// pass clears it.
	now = now.Add(stallAfter + time.Second)
	expect("stalled", 503, 503, "draining stalled")
	passes.Add(1)
	expect("passing again", 200, 200, "")

	if err := os.Truncate(path, 100); err != nil {
		t.Fatal(err)
	}
	expect("truncated", 503, 503, "damaged: 100 bytes, was 4096")
	os.Remove(path)
	expect("removed", 503, 503, "workers started now cannot reach this host")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	expect("replaced", 503, 503, "was replaced")
	hl.shmOpened(path, passes.Load)
	expect("reopened", 200, 200, "")

	hl.drainStopped(errors.New("shm: corrupt header"))
	expect("drain failed", 503, 503, "draining stopped: shm: corrupt header")
	hl.drainStopped(nil)
	expect("drain ended without shutdown", 503, 503, "draining stopped")
	hl.stop()
	expect("shutting down", 200, 503, "stopping")
}
