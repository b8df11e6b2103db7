package tests

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/reportertest"
	"github.com/tapes-go/tapes/internal/testenv"
)

// tapes-host runs a Go collector plugin built from source on an interval,
// and a C command plugin (hostabi's ccmd, built from source) once.
func TestHostRunsCollectorAndCommandPlugins(t *testing.T) {
	dir := t.TempDir()
	goWasm := builds.Path(t, "plugin-go.wasm", testenv.GoWasm(".", "./examples/plugin-go", "c-shared"))
	cmdWasm := builds.Path(t, "ccmd.wasm", testenv.WasiC(testenv.WasiClang(t), "hostabi/testdata/ccmd.c", false))
	h := startHost(t, "-shm", filepath.Join(dir, "p.shm"), "-http", "127.0.0.1:0",
		"-plugin", goWasm+"=plugins.gop", "-plugin", cmdWasm+"=plugins.cmd",
		"-plugin-interval", "100ms", "-wasm-cache", filepath.Join(dir, "cache"))
	// Each collect records ten synthetic requests and one collection.
	n := h.waitStat("plugins.gop.collections.value", func(v float64) bool { return v >= 3 }, "collector calls")
	h.waitStat("plugins.gop.requests.value", func(v float64) bool { return v >= 10*n }, "requests per collect")
	h.waitStat("plugins.cmd.runs.value", eq(1), "command plugin ran once")
	for _, seg := range []string{"plugins_gop", "plugins_cmd"} {
		for _, kind := range []string{"trap", "timeout", "crash", "memory", "protocol"} {
			h.waitStat("tapes.host.plugins."+seg+".errors."+kind+".value", eq(0), "no plugin errors")
		}
		h.waitStat("tapes.host.plugins."+seg+".restarts.value", eq(0), "no plugin restarts")
	}
	h.stop(syscall.SIGTERM)
}

// The host's registry reaches a real StatsD (push) and a real Prometheus
// (scrape) with the workers' exact totals.
func TestHostReportsToRealStatsDAndPrometheus(t *testing.T) {
	sd := reportertest.StartStatsD(t)
	dir := t.TempDir()
	h := startHost(t, "-shm", filepath.Join(dir, "r.shm"), "-http", "127.0.0.1:0",
		"-statsd", sd.Addr, "-statsd-prefix", "e2e", "-interval", "200ms")
	prom := reportertest.StartPrometheus(t, h.addr)
	w := worker(t, h.shm, "-n", "300")
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	h.waitStat("test.requests.value", eq(300), "drained")
	sd.WaitFor(0, 20*time.Second, func(f reportertest.Flushes) bool {
		return f.Counter("e2e.test.requests.total") == 300 && f.Counter("e2e.test.jobs.total") == 600
	})
	prom.WaitFor(`test_requests`, 30*time.Second, func(s []reportertest.Sample) bool {
		return len(s) == 1 && s[0].Value == 300
	})
	prom.WaitFor(`test_latency_seconds_count`, 30*time.Second, func(s []reportertest.Sample) bool {
		return len(s) == 1 && s[0].Value == 300
	})
	h.stop(syscall.SIGTERM)
}
