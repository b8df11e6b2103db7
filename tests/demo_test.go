package tests

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The README's first command: the demo runs the host, two worker processes
// and the example C plugin, and all three feed the registry.
func TestDemoEndToEnd(t *testing.T) {
	dir := t.TempDir()
	h := startHost(t, "demo", "-shm", filepath.Join(dir, "demo.shm"), "-http", "127.0.0.1:0")
	h.waitStat("demo.http.requests.value", func(v float64) bool { return v >= 100 }, "demo workers' requests")
	h.waitStat("demo.http.index.latency.count", func(v float64) bool { return v > 0 }, "a route timer")
	h.waitStat("tapes.host.workers.running.value", eq(2), "two demo workers")
	st := h.stats()
	plugins, ok := st["plugins"].(map[string]any)
	if !ok || plugins["example"] == nil {
		t.Fatalf("no plugins.example.* metrics from the example plugin: %s", h.get("/stats"))
	}
	h.stop(syscall.SIGINT)
	if !strings.Contains(h.stdout(), "TAPES_SHM=") {
		t.Errorf("demo did not print the TAPES_SHM line:\n%s", h.stdout())
	}
}
