package tests

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Real worker processes record known sequences; the host's /stats and
// /metrics show exact totals, and the host reports on itself.
func TestHostDrainsWorkersEndToEnd(t *testing.T) {
	dir := t.TempDir()
	h := startHost(t, "-shm", filepath.Join(dir, "t.shm"), "-http", "127.0.0.1:0")
	const workers, n = 3, 2000
	for range workers {
		w := worker(t, h.shm, "-n", "2000")
		if err := w.Wait(); err != nil {
			t.Fatalf("worker: %v", err)
		}
	}
	h.waitStat("test.requests.value", eq(workers*n), "counter total")
	h.waitStat("test.latency.count", eq(workers*n), "timer count")
	h.waitStat("test.jobs.count", eq(2*workers*n), "meter count")
	st := h.stats()
	for path, want := range map[string]float64{
		"test.sizes.count": workers * n,
		"test.sizes.min":   1,
		"test.sizes.max":   n,
		"test.latency.min": 1e-6,
		"test.latency.max": n * 1e-6,
	} {
		if got, ok := lookup(st, path); !ok || !near(got, want, 1e-9) {
			t.Errorf("%s = %v (found %v), want %v", path, got, ok, want)
		}
	}
	if q, _ := lookup(st, "test.sizes.q50"); !near(q, n/2, 0.01) {
		t.Errorf("test.sizes.q50 = %v, want %v within 1%%", q, n/2)
	}
	// The host counts a pass's events once the pass ends, after it applied
	// them: a read in between saw the metrics complete and drained at 0.
	h.waitStat("tapes.host.shm.drained.value", func(v float64) bool { return v >= workers*n*4 }, "events counted as drained")
	prom := string(h.get("/metrics"))
	for _, want := range []string{
		"\ntest_requests 6000\n",
		"test_latency_seconds_count 6000",
		"# TYPE test_latency_seconds summary",
		`test_sizes{quantile="0.5"}`,
	} {
		if !strings.Contains(prom, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !strings.Contains(prom, "tapes_host_") {
		t.Errorf("/metrics has no tapes_host_* self metrics")
	}
	h.stop(syscall.SIGTERM)
}

func near(got, want, rel float64) bool {
	d := got - want
	if d < 0 {
		d = -d
	}
	return d <= rel*abs(want)
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// Supervisor mode: a worker that crashes is restarted, and the metrics of
// every incarnation add up.
func TestSupervisorRestartsCrashedWorkers(t *testing.T) {
	dir := t.TempDir()
	h := startHost(t, "run", "-shm", filepath.Join(dir, "s.shm"), "-http", "127.0.0.1:0",
		"-workers", "2", "-restart-min", "20ms", "-restart-max", "200ms", "-restart-limit", "0",
		"--", testworkerBin(t), "-n", "100", "-crash")
	// Each incarnation records 100 requests and crashes; 2 workers restarted
	// at least 3 times each make at least 8 incarnations.
	h.waitStat("tapes.host.workers.restarts.value", func(v float64) bool { return v >= 6 }, "restarts")
	h.waitStat("test.requests.value", func(v float64) bool { return v >= 800 }, "requests across incarnations")
	h.stop(syscall.SIGTERM)
	if !strings.Contains(h.stderr(), "restarting") {
		t.Errorf("no restart logged:\n%s", h.stderr())
	}
}

// SIGTERM drains everything: events recorded right before the host's
// signal appear in its final report.
func TestShutdownDrainsIntoFinalReport(t *testing.T) {
	dir := t.TempDir()
	stream := filepath.Join(dir, "stream.jsonl")
	h := startHost(t, "-shm", filepath.Join(dir, "d.shm"), "-http", "127.0.0.1:0",
		"-stream", stream, "-interval", "1h", "-ring", "65536")
	w := worker(t, h.shm, "-n", "5000")
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	h.stop(syscall.SIGTERM) // no wait: the drain loop may not have seen them yet
	last := lastJSONLine(t, stream)
	if v, ok := lookup(last, "stats.test.requests.value"); !ok || v != 5000 {
		b, _ := json.Marshal(last)
		t.Fatalf("final report: test.requests = %v (found %v), want 5000\n%s", v, ok, b)
	}
}

func lastJSONLine(t *testing.T, path string) map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	lines := 0
	for sc.Scan() {
		lines++
		last = nil
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("stream line %d is not JSON: %v", lines, err)
		}
	}
	if lines < 2 {
		t.Fatalf("stream has %d lines, want the first report and the final one", lines)
	}
	return last
}

// inspect reads a live file without draining it, and refuses a corrupt one
// with a clear error and a non-zero exit, never a panic.
func TestInspect(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "i.shm")
	h := startHost(t, "-shm", path, "-http", "127.0.0.1:0")
	w := worker(t, h.shm, "-n", "10", "-hold", "-prefix", "inspected")
	h.waitStat("inspected.requests.value", eq(10), "worker running")
	out, err := exec.Command(hostBin(t), "inspect", path).CombinedOutput()
	if err != nil {
		t.Fatalf("inspect live file: %v\n%s", err, out)
	}
	for _, want := range []string{"inspected.requests", "inspected.latency", strconv.Itoa(w.Process.Pid)} {
		if !strings.Contains(string(out), want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	_ = w.Process.Signal(syscall.SIGTERM)
	_ = w.Wait()
	h.stop(syscall.SIGTERM)

	for name, data := range map[string][]byte{
		"garbage":   []byte(strings.Repeat("not a tapes file ", 4096)),
		"empty":     {},
		"truncated": readPrefix(t, path, 100),
	} {
		bad := filepath.Join(dir, name+".shm")
		if err := os.WriteFile(bad, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(hostBin(t), "inspect", bad).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() == 0 {
			t.Errorf("inspect %s: err %v, want a non-zero exit\n%s", name, err, out)
		}
		s := string(out)
		if strings.Contains(s, "panic") || strings.Contains(s, "goroutine ") {
			t.Errorf("inspect %s panicked:\n%s", name, s)
		}
		if !strings.HasPrefix(s, "tapes-host: inspect ") || strings.Count(strings.TrimSpace(s), "\n") > 0 {
			t.Errorf("inspect %s: want one clear error line, got:\n%s", name, s)
		}
	}
}

func readPrefix(t *testing.T, path string, n int) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b[:min(n, len(b))]
}

// Invalid configuration: one clear error line and exit code 2; -h exits 0.
func TestInvalidConfiguration(t *testing.T) {
	dir := t.TempDir()
	badConfig := filepath.Join(dir, "bad.json")
	os.WriteFile(badConfig, []byte(`{"no-such-setting": 1}`), 0o600)
	wrongType := filepath.Join(dir, "wrong.json")
	os.WriteFile(wrongType, []byte(`{"interval": "soon"}`), 0o600)
	for name, args := range map[string][]string{
		"unknown flag":    {"-nope"},
		"bad duration":    {"-interval", "fast"},
		"bad ring":        {"-ring", "1000"},
		"missing plugin":  {"-plugin", filepath.Join(dir, "missing.wasm")},
		"unknown setting": {"-config", badConfig},
		"bad value":       {"-config", wrongType},
		"missing config":  {"-config", filepath.Join(dir, "none.json")},
		"run without cmd": {"run", "-workers", "2"},
		"bad statsd":      {"-statsd", "nowhere"},
	} {
		out, err := exec.Command(hostBin(t), args...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("%s: err %v, want exit code 2\n%s", name, err, out)
			continue
		}
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "tapes-host: ") {
			t.Errorf("%s: want one error line, got:\n%s", name, out)
		}
	}
	out, err := exec.Command(hostBin(t), "-h").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-plugin") || !strings.Contains(string(out), "inspect") {
		t.Errorf("-h: %v\n%s", err, out)
	}
}

// A config file supplies flags; the command line wins over it.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.json")
	os.WriteFile(cfg, []byte(`{"http": "127.0.0.1:1", "shm": "`+filepath.Join(dir, "c.shm")+`", "interval": "1h"}`), 0o600)
	h := startHost(t, "-config", cfg, "-http", "127.0.0.1:0")
	if h.shm != filepath.Join(dir, "c.shm") {
		t.Errorf("shm from config: got %s", h.shm)
	}
	if strings.HasSuffix(h.addr, ":1") {
		t.Errorf("command line -http did not win over the config file: %s", h.addr)
	}
	h.stop(syscall.SIGINT)
}

// TestHTTPPortAloneMeansLoopback: "-http :PORT" must not expose the
// metrics to the network; all interfaces take an explicit 0.0.0.0.
func TestHTTPPortAloneMeansLoopback(t *testing.T) {
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "l.shm"), "-http", ":0")
	if !strings.HasPrefix(h.addr, "127.0.0.1:") {
		t.Errorf("-http :0 listens on %s, want 127.0.0.1", h.addr)
	}
	h.stop(syscall.SIGINT)
}
