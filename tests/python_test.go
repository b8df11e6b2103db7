package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
)

// Python workers (clients/python, import name tapes_shm) against the real
// tapes-host: the C extension is built from source with the system Python
// by setup.py, and every worker is a real python3 process.

// python returns the system Python (TAPES_PYTHON overrides) after checking
// that it can build the extension; in CI a missing piece fails the test.
func python(t *testing.T) string {
	t.Helper()
	py := os.Getenv("TAPES_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
		if _, err := os.Stat(py); err != nil {
			py = "python3"
		}
	}
	p, err := exec.LookPath(py)
	if err != nil {
		testenv.Missing(t, "python3", "apt-get install -y python3 python3-dev python3-setuptools")
	}
	check := `import os, sys, sysconfig
try:
    import setuptools
except ImportError:
    sys.exit("python3-setuptools")
if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
    sys.exit("python3-dev")`
	if out, err := exec.Command(p, "-c", check).CombinedOutput(); err != nil {
		testenv.Missing(t, fmt.Sprintf("%s for %s (%v)", strings.TrimSpace(string(out)), p, err),
			"apt-get install -y --no-install-recommends python3-dev python3-setuptools")
	}
	return p
}

// pyLib builds tapes_shm (the package and its C extension) once per test
// binary into the build directory and returns the directory to put on
// PYTHONPATH. Nothing is written into the source tree.
func pyLib(t *testing.T) (py, lib string) {
	t.Helper()
	py = python(t)
	lib = builds.Path(t, "python-lib", func(out string) error {
		cmd := exec.Command(py, "setup.py", "-q", "build", "--build-base", out+".build", "--build-lib", out)
		cmd.Dir = filepath.Join(testenv.RepoRoot(), "clients", "python")
		cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building tapes_shm: %v\n%s", err, b)
		}
		return nil
	})
	return py, lib
}

func pyEnv(lib, shmPath string, extra ...string) []string {
	env := append(os.Environ(), "TAPES_SHM="+shmPath, "PYTHONPATH="+lib, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	return append(env, extra...)
}

// pyProc is a running clients/python/tests/pyworker.py.
type pyProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan map[string]any
	mu    sync.Mutex
	out   bytes.Buffer // everything it printed, for failure messages
	done  chan error
}

func startPy(t *testing.T, shmPath string, args ...string) *pyProc {
	t.Helper()
	py, lib := pyLib(t)
	script := filepath.Join(testenv.RepoRoot(), "clients", "python", "tests", "pyworker.py")
	p := &pyProc{t: t, lines: make(chan map[string]any, 64), done: make(chan error, 1)}
	p.cmd = exec.Command(py, append([]string{script}, args...)...)
	p.cmd.Dir = t.TempDir()
	p.cmd.Env = pyEnv(lib, shmPath)
	p.cmd.Stderr = lockedWriter{&p.mu, &p.out}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				p.lines <- m
			}
		}
		close(p.lines)
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *pyProc) output() string { p.mu.Lock(); defer p.mu.Unlock(); return p.out.String() }

// step waits for the JSON line whose "step" is want.
func (p *pyProc) step(want string) map[string]any {
	p.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case m, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("python worker ended before step %q\n%s", want, p.output())
			}
			if m["step"] == want {
				return m
			}
		case <-timeout:
			p.t.Fatalf("python worker: no step %q within 60s\n%s", want, p.output())
		}
	}
}

// wait requires exit code code within 60 s (a bound for "it ended at all").
func (p *pyProc) wait(code int) {
	p.t.Helper()
	for range p.lines {
	}
	select {
	case err := <-p.done:
		got := 0
		if ee, ok := err.(*exec.ExitError); ok {
			got = ee.ExitCode()
		} else if err != nil {
			p.t.Fatalf("python worker: %v\n%s", err, p.output())
		}
		if got != code {
			p.t.Fatalf("python worker exit code %d, want %d\n%s", got, code, p.output())
		}
	case <-time.After(60 * time.Second):
		p.t.Fatalf("python worker did not exit within 60s\n%s", p.output())
	}
}

// waitStatFor is waitStat with a longer bound, for what waits on Python
// processes starting (a few seconds each on a loaded 2-core machine).
func (h *hostProc) waitStatFor(d time.Duration, path string, ok func(float64) bool, what string) {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if v, found := lookup(h.stats(), path); found && ok(v) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.waitStat(path, ok, what) // reports what it sees
}

// signal stops or resumes tapes-host itself (SIGSTOP: nothing drains).
func (h *hostProc) signal(sig syscall.Signal) {
	h.t.Helper()
	if err := h.cmd.Process.Signal(sig); err != nil {
		h.t.Fatal(err)
	}
}

// The Python unit tests (clients/python/tests/test_*.py) against a live
// host; none may skip.
func TestPythonUnittest(t *testing.T) {
	py, lib := pyLib(t)
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "u.shm"), "-http", "127.0.0.1:0", "-ring", "65536")
	dir := filepath.Join(testenv.RepoRoot(), "clients", "python", "tests")
	cmd := exec.Command(py, "-m", "unittest", "discover", "-s", dir, "-t", dir, "-p", "test_*.py", "-v")
	cmd.Dir = t.TempDir() // not clients/python, whose tapes_shm has no built extension
	cmd.Env = pyEnv(lib, h.shm, "TAPES_TEST_STATS=http://"+h.addr+"/stats")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python unittest: %v\n%s", err, out)
	}
	s := string(out)
	m := regexp.MustCompile(`Ran (\d+) tests? in`).FindStringSubmatch(s)
	if m == nil || m[1] == "0" || !strings.Contains(s, "\nOK") || strings.Contains(s, "skipped") {
		t.Fatalf("python unittest: want every test run and passed, none skipped:\n%s", s)
	}
	t.Logf("python unittest: %s tests passed", m[1])
	h.stop(syscall.SIGTERM)
}

// Several Python processes (one with threads sharing handles) record at
// once; the host's totals are exact. Each worker's events fit in its ring,
// so none may be dropped however the host is scheduled (on 2 busy cores it
// can fall a ring behind a Python worker recording in a loop).
func TestPythonExactCountsFromProcesses(t *testing.T) {
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "c.shm"), "-http", "127.0.0.1:0", "-slots", "8", "-ring", "65536")
	const n = 3000
	var ps []*pyProc
	for _, threads := range []string{"1", "1", "1", "3"} {
		ps = append(ps, startPy(t, h.shm, "count", strconv.Itoa(n), threads))
	}
	for _, p := range ps {
		m := p.step("recorded")
		if m["dropped"] != 0.0 || m["lost"] != 0.0 {
			t.Errorf("worker dropped %v, lost %v", m["dropped"], m["lost"])
		}
		p.wait(0)
	}
	const events = 6 * n // 3 single-threaded workers + 3 threads
	h.waitStat("py.requests.value", eq(events), "counter total")
	h.waitStat("py.latency.count", eq(events), "timer count")
	h.waitStat("py.jobs.count", eq(2*events), "meter count")
	h.waitStat("py.sizes.count", eq(events), "histogram count")
	st := h.stats()
	for path, want := range map[string]float64{
		"py.sizes.min":                     1,
		"py.sizes.max":                     n,
		"py.latency.min":                   1e-6,
		"py.latency.max":                   n * 1e-6,
		"tapes.host.shm.dropped.all.value": 0,
		"tapes.host.shm.malformed.value":   0,
		"tapes.host.shm.rejected.value":    0,
		"tapes.host.shm.discarded.value":   0,
		"tapes.host.shm.aborted.value":     0,
	} {
		if got, ok := lookup(st, path); !ok || !near(got, want, 1e-9) {
			t.Errorf("%s = %v (found %v), want %v", path, got, ok, want)
		}
	}
	if !strings.Contains(string(h.get("/metrics")), fmt.Sprintf("\npy_requests %d\n", events)) {
		t.Errorf("/metrics lacks py_requests %d", events)
	}
	h.stop(syscall.SIGTERM)
}

// SIGKILL of a Python worker loses none of its committed events (the host
// is stopped while it records, so they are all still in the ring when it
// dies), and its slot is reclaimed: with one slot in the file, a new worker
// gets it. While the slot is held, another worker gets a clear error.
func TestPythonSIGKILLKeepsEventsAndFreesSlot(t *testing.T) {
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "k.shm"), "-http", "127.0.0.1:0", "-slots", "1")
	h.signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			h.signal(syscall.SIGCONT)
		}
	}()
	const n = 5000
	w := startPy(t, h.shm, "hold", strconv.Itoa(n))
	w.step("ready")

	other := startPy(t, h.shm, "noslot")
	if m := other.step("noslot"); !strings.Contains(m["error"].(string), "no free worker slot") {
		t.Errorf("second worker's error: %v", m["error"])
	}
	other.wait(3)

	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	w.wait(-1) // killed by a signal
	h.signal(syscall.SIGCONT)
	stopped = false
	h.waitStat("py.held.value", eq(n), "events of the killed worker")
	h.waitStat("tapes.host.shm.reclaimed.value", eq(1), "slot of the killed worker reclaimed")
	h.waitStat("tapes.host.shm.workers.value", eq(0), "live workers")

	again := startPy(t, h.shm, "hold", "7")
	again.step("ready")
	h.waitStat("py.held.value", eq(n+7), "a new worker in the reclaimed slot")
	h.waitStat("tapes.host.shm.aborted.value", eq(0), "aborted records")
	h.stop(syscall.SIGTERM)
}

// A process forks after recording: the child (and its child, and
// multiprocessing's children) get slots of their own, the parent's slot
// holds exactly the parent's events, and the totals add up.
func TestPythonForkAfterRecording(t *testing.T) {
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "f.shm"), "-http", "127.0.0.1:0")
	const n, m, l = 100, 50, 10
	p := startPy(t, h.shm, "fork", strconv.Itoa(n), strconv.Itoa(m), strconv.Itoa(l))
	grand := p.step("grandchild")
	child := p.step("child")
	mp1 := p.step("mp-child")
	mp2 := p.step("mp-child")
	parent := p.step("parent")
	p.wait(0)

	before := parent["before"].(map[string]any)
	afterChild := parent["after_child"].(map[string]any)
	end := parent["end"].(map[string]any)
	if before["reserve"] != float64(n) || afterChild["reserve"] != float64(n) {
		t.Errorf("parent's slot: reserve %v before the fork, %v after the child recorded; want %d both (a child wrote into it?)",
			before["reserve"], afterChild["reserve"], n)
	}
	if end["reserve"] != float64(n+l) || end["slot"] != before["slot"] {
		t.Errorf("parent at the end: %v, want reserve %d in slot %v", end, n+l, before["slot"])
	}
	pids := map[float64]bool{}
	for _, v := range []map[string]any{before, child, grand, mp1, mp2} {
		if v["attached"] != true {
			t.Errorf("not attached: %v", v)
		}
		if pids[v["pid"].(float64)] {
			t.Errorf("pid %v twice", v["pid"])
		}
		pids[v["pid"].(float64)] = true
	}
	for _, v := range []map[string]any{child, grand, mp1, mp2} {
		if v["slot"] == before["slot"] {
			t.Errorf("child pid %v uses the parent's slot %v", v["pid"], v["slot"])
		}
		if v["reserve"] != float64(m) {
			t.Errorf("child pid %v: reserve %v, want %d", v["pid"], v["reserve"], m)
		}
	}
	if child["slot"] == grand["slot"] {
		t.Errorf("child and grandchild share slot %v", child["slot"])
	}
	h.waitStat("py.forked.value", eq(n+4*m+l), "total over parent and children")
	h.waitStat("tapes.host.shm.reclaimed.value", eq(5), "slots of all five processes reclaimed")
	h.waitStat("tapes.host.shm.malformed.value", eq(0), "malformed")
	h.stop(syscall.SIGTERM)
}

// A full ring drops the newest events and counts them, and recording never
// waits: with the host stopped, a worker records far more than its ring
// holds and exits; the host, resumed, has exactly the ring's worth and
// reports the rest as dropped.
func TestPythonFullRingDropsAndNeverBlocks(t *testing.T) {
	const ring, n = 64, 20000
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "r.shm"), "-http", "127.0.0.1:0", "-ring", strconv.Itoa(ring))
	h.signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			h.signal(syscall.SIGCONT)
		}
	}()
	w := startPy(t, h.shm, "fill", strconv.Itoa(n))
	m := w.step("filled")
	w.wait(0)
	if m["dropped"] != float64(n-ring) || m["reserve"] != float64(ring) {
		t.Errorf("worker: dropped %v reserve %v, want %d and %d", m["dropped"], m["reserve"], n-ring, ring)
	}
	h.signal(syscall.SIGCONT)
	stopped = false
	h.waitStat("py.filled.value", eq(ring), "committed events")
	h.waitStat("tapes.host.shm.dropped.all.value", eq(n-ring), "dropped events")
	h.stop(syscall.SIGTERM)
}

// Gauges in each cross-process mode from three workers; a killed worker
// stops contributing.
func TestPythonGaugeModes(t *testing.T) {
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "g.shm"), "-http", "127.0.0.1:0")
	var ws []*pyProc
	var pids []int
	// One at a time, so that "last" has a known order.
	for _, v := range []string{"1", "5", "10"} {
		w := startPy(t, h.shm, "gauge", v)
		m := w.step("ready")
		pid := int(m["pid"].(float64))
		h.waitStatFor(60*time.Second, fmt.Sprintf("py.g.per_worker.pid-%d.value", pid), eq(mustFloat(t, v)), "per-worker gauge")
		ws, pids = append(ws, w), append(pids, pid)
	}
	h.waitStat("py.g.sum.value", eq(16), "sum")
	h.waitStat("py.g.min.value", eq(1), "min")
	h.waitStat("py.g.max.value", eq(10), "max")
	h.waitStat("py.g.last.value", eq(10), "last")

	if err := ws[2].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ws[2].wait(-1)
	h.waitStat("py.g.sum.value", eq(6), "sum without the killed worker")
	h.waitStat("py.g.max.value", eq(5), "max without the killed worker")
	h.waitStat("py.g.last.value", eq(5), "last without the killed worker")
	h.waitStat("py.g.min.value", eq(1), "min")
	st := h.stats()
	if _, ok := lookup(st, fmt.Sprintf("py.g.per_worker.pid-%d.value", pids[2])); ok {
		t.Errorf("the killed worker's per-worker series is still there")
	}
	for _, pid := range pids[:2] {
		if _, ok := lookup(st, fmt.Sprintf("py.g.per_worker.pid-%d.value", pid)); !ok {
			t.Errorf("live worker %d's per-worker series is missing", pid)
		}
	}
	for _, w := range ws[:2] {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		w.wait(-1)
	}
	// With no live worker the sum is 0 (layout 1 hosts) or the gauge is
	// gone (layout 2 hosts forget a gauge no live worker defines).
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, found := lookup(h.stats(), "py.g.sum.value")
		if !found || v == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sum with no live worker: %v", v)
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.stop(syscall.SIGTERM)
}

func mustFloat(t *testing.T, s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// examples/python-gunicorn: gunicorn with 4 workers under tapes-host run;
// /metrics has every worker's numbers.
func TestExamplePythonGunicorn(t *testing.T) {
	_, lib := pyLib(t)
	gunicorn := testenv.Tool(t, "gunicorn", "gunicorn")
	addr := freeAddr(t)
	ex := filepath.Join(testenv.RepoRoot(), "examples", "python-gunicorn")
	// tapes-host run passes its environment on to gunicorn and its workers.
	t.Setenv("PYTHONPATH", lib)
	t.Setenv("PYTHONDONTWRITEBYTECODE", "1")
	h := startHost(t, "run", "-workers", "1", "-shm", filepath.Join(t.TempDir(), "gu.shm"), "-http", "127.0.0.1:0",
		"--", gunicorn, "-w", "4", "-b", addr, "--chdir", ex, "app:app")
	// Each worker imports the app, whose metrics claim a slot at once.
	h.waitStatFor(90*time.Second, "tapes.host.shm.workers.value", eq(4), "gunicorn workers attached")

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	const index, users, fails = 200, 40, 5
	served := map[string]bool{}
	for range index {
		httpGet(t, client, "http://"+addr+"/", 200, "finished")
	}
	for range users {
		body := httpGet(t, client, "http://"+addr+"/users/42", 200, "")
		if m := regexp.MustCompile(`served by pid (\d+)`).FindStringSubmatch(body); m != nil {
			served[m[1]] = true
		} else {
			t.Fatalf("/users/42 answered %q", body)
		}
	}
	for range fails {
		httpGet(t, client, "http://"+addr+"/fail", 500, "something broke\n")
	}
	h.waitStat("http.index.latency.count", eq(index), "index requests")
	h.waitStat("http.users.latency.count", eq(users), "users requests")
	h.waitStat("http.fail.errors.value", eq(fails), "5xx")
	h.waitStat("http.requests.count", eq(index+users+fails), "requests meter")
	h.waitStat("http.inflight.value", eq(0), "in-flight requests back to 0")
	prom := string(h.get("/metrics"))
	for _, want := range []string{
		fmt.Sprintf("http_index_latency_seconds_count %d\n", index),
		fmt.Sprintf("\nhttp_fail_errors %d\n", fails),
	} {
		if !strings.Contains(prom, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	promtoolCheck(t, prom)
	// Every worker reports its own memory (a per-worker function gauge).
	if n := len(regexp.MustCompile(`(?m)^process_rss_bytes\{worker="\d+"\} `).FindAllString(prom, -1)); n != 4 {
		t.Errorf("/metrics has %d process_rss_bytes{worker=...} series, want 4 (one per worker)\n%s", n, prom)
	}
	if len(served) < 2 {
		t.Logf("only %d worker pids answered /users (the kernel chose)", len(served))
	}
	h.stop(syscall.SIGTERM)
	if !strings.Contains(h.stderr(), "Booting worker") {
		t.Errorf("gunicorn's log is not in tapes-host's stderr:\n%s", h.stderr())
	}
}
