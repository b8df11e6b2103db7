package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Operations: what an operator (systemd, a container runtime, a terminal)
// does to tapes-host, done to the real binary with real signals.

// SIGHUP re-reads -config: the reloadable settings take effect, the others
// are logged as needing a restart, and the host (and its workers) keep
// running and draining.
func TestSIGHUPReloadsAndKeepsRunning(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.json")
	stream := filepath.Join(dir, "s.jsonl")
	writeFile(t, cfg, `{"interval": "1h", "log-level": "info", "stream": "`+stream+`"}`)
	h := startHost(t, "run", "-config", cfg, "-shm", filepath.Join(dir, "r.shm"), "-http", "127.0.0.1:0",
		"-workers", "2", "--", testworkerBin(t), "-n", "10", "-hold")
	h.waitStat("tapes.host.workers.running.value", eq(2), "workers running")
	pids := loggedWorkers(t, h, 2)
	if n := lineCount(t, stream); n != 1 {
		t.Fatalf("%d stream lines before the reload, want the first report only", n)
	}

	writeFile(t, cfg, `{"interval": "50ms", "log-level": "debug", "stream": "`+stream+`", "slots": 8}`)
	for i := range 2 { // twice: a second SIGHUP is as harmless as the first
		if err := h.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "reload logged", func() bool {
			return strings.Count(h.stderr(), "SIGHUP: configuration reloaded") > i
		}, h.stderr)
	}
	waitFor(t, 20*time.Second, "stream reports at the reloaded 50ms interval", func() bool {
		return lineCount(t, stream) >= 10
	}, h.stderr)
	for _, want := range []string{`needs_restart=slots`, `setting=slots running=0 file=8`, `applied="interval=50ms log-level=debug"`} {
		if !strings.Contains(h.stderr(), want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	// The workers are the same processes and still recording.
	if got := workerPids(h.stderr()); len(got) != 2 {
		t.Errorf("workers restarted on SIGHUP: pids %v, were %v", got, pids)
	}
	before, _ := lookup(h.stats(), "test.ticks.value")
	h.waitStat("test.ticks.value", func(v float64) bool { return v > before }, "still draining after SIGHUP")
	if code, _ := probe(t, h.addr, "/healthz"); code != 200 {
		t.Errorf("/healthz %d after SIGHUP", code)
	}
	h.stop(syscall.SIGTERM)
}

// A supervisor killed with SIGKILL (OOM killer, kill -9, a crashed
// container runtime) cannot stop its workers: the kernel must, or they go
// on recording into a file nothing drains. Both run and demo.
func TestSIGKILLedSupervisorLeavesNoWorkers(t *testing.T) {
	for name, args := range map[string][]string{
		"run":  {"run", "-workers", "3", "--", testworkerBin(t), "-n", "10", "-hold"},
		"demo": {"demo", "-workers", "2"},
	} {
		t.Run(name, func(t *testing.T) {
			args = append([]string{args[0], "-shm", filepath.Join(t.TempDir(), "k.shm"), "-http", "127.0.0.1:0"}, args[1:]...)
			h := startHost(t, args...)
			want := 3
			if name == "demo" {
				want = 2
			}
			h.waitStat("tapes.host.workers.running.value", eq(float64(want)), "workers running")
			pids := loggedWorkers(t, h, want)
			for _, pid := range pids {
				if !running(pid) {
					t.Fatalf("worker %d not running before the kill", pid)
				}
			}
			// Runs before startHost's cleanup, which waits for the end of
			// stdout: orphaned workers would hold it open.
			t.Cleanup(func() {
				for _, pid := range pids {
					if running(pid) {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				// Receive the exit (and put it back) so that startHost's
				// cleanup reads cmd.ProcessState after Wait wrote it.
				select {
				case err := <-h.waited:
					h.waited <- err
				case <-time.After(20 * time.Second):
				}
			})
			if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 20*time.Second, "every worker gone after SIGKILL of the supervisor", func() bool {
				for _, pid := range pids {
					if running(pid) {
						return false
					}
				}
				return true
			}, func() string { return "still running: " + psList(pids) })
		})
	}
}

// A command that cannot run fails at once with one clear line and exit 2,
// before the shm file exists; a command that disappears while tapes-host
// runs ends it with exit 1 instead of being retried forever.
func TestRunUnstartableCommand(t *testing.T) {
	dir := t.TempDir()
	shmPath := filepath.Join(dir, "u.shm")
	for _, argv := range [][]string{{"/nonexistent/cmd"}, {filepath.Join(dir, "not-executable")}} {
		writeFile(t, filepath.Join(dir, "not-executable"), "#!/bin/sh\n")
		code, stderr := runToEnd(t, 30*time.Second, append([]string{"run", "-shm", shmPath, "-http", "127.0.0.1:0", "--"}, argv...)...)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "tapes-host: cannot run "+argv[0]+": ") {
			t.Errorf("run -- %s: exit %d, stderr %q; want exit 2 and one line", argv[0], code, stderr)
		}
		if _, err := os.Stat(shmPath); err == nil {
			t.Errorf("run -- %s: the shm file was created", argv[0])
		}
	}

	// Valid at start, gone at the first restart.
	script := filepath.Join(dir, "vanishing.sh")
	writeFile(t, script, "#!/bin/sh\nrm -f \"$0\"\nexit 1\n")
	if err := os.Chmod(script, 0o700); err != nil {
		t.Fatal(err)
	}
	code, stderr := runToEnd(t, 30*time.Second, "run", "-shm", shmPath, "-http", "127.0.0.1:0",
		"-restart-min", "10ms", "-restart-max", "20ms", "--", script)
	if code != 1 || !strings.Contains(stderr, "tapes-host: run: worker 0: cannot start "+script+": no such file or directory") {
		t.Errorf("a command removed while running: exit %d, want 1 with a clear last line\n%s", code, stderr)
	}
}

// A worker that keeps exiting makes tapes-host give up with exit 1 once
// the restart limit is reached, not restart it forever.
func TestRunRestartLimit(t *testing.T) {
	code, stderr := runToEnd(t, 60*time.Second, "run", "-shm", filepath.Join(t.TempDir(), "l.shm"),
		"-http", "127.0.0.1:0", "-workers", "2", "-restart-min", "10ms", "-restart-max", "40ms",
		"-restart-limit", "3", "--", testworkerBin(t), "-n", "5", "-crash")
	if code != 1 {
		t.Errorf("exit %d, want 1\n%s", code, stderr)
	}
	last := lastLine(stderr)
	if !regexp.MustCompile(`^tapes-host: run: worker \d exited 4 times within 1m0s \(-restart-limit 3\); last: exit status 3$`).MatchString(last) {
		t.Errorf("last line %q", last)
	}
	if n := strings.Count(stderr, "worker exited; restarting"); n < 3 || n > 6 {
		t.Errorf("%d restarts before giving up, want 3..6 (3 per worker at most)\n%s", n, stderr)
	}
}

// The probes answer 200 on a working host, with its runtime and build
// metrics in /metrics; a host whose shm file is damaged never answers 200
// again and exits 1.
func TestHealthEndpointsThroughTheBinary(t *testing.T) {
	dir := t.TempDir()
	h := startHost(t, "-shm", filepath.Join(dir, "h.shm"), "-http", "127.0.0.1:0", "-plugin",
		filepath.Join("..", "examples", "plugin-c", "plugin-c.wasm"))
	waitReady(t, h)
	for _, p := range []string{"/healthz", "/-/healthy", "/readyz", "/-/ready"} {
		if code, body := probe(t, h.addr, p); code != 200 {
			t.Errorf("%s: %d %q on a working host", p, code, body)
		}
	}
	prom := string(h.get("/metrics"))
	for _, want := range []string{"tapes_host_healthy 1\n", "tapes_host_ready 1\n", "tapes_build_info 1\n",
		"tapes_host_go_goroutines ", "tapes_host_go_threads ", "tapes_host_process_resident_bytes ",
		"tapes_host_process_open_fds ", "tapes_host_go_gc_cycles ", "tapes_host_go_gc_pauses_seconds_count "} {
		if !strings.Contains(prom, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	promtoolCheck(t, prom)

	// A damaged file stops the host (exit 1, so that its supervisor
	// restarts it and the file is re-created); until it has exited, the
	// probes must not answer 200 for it.
	if err := os.Truncate(h.shm, 4096); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the host with a truncated shm file unhealthy or gone", func() bool {
		resp, err := http.Get("http://" + h.addr + "/healthz")
		if err != nil {
			return true // exited
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			return false
		}
		if resp.StatusCode != 503 || !strings.Contains(string(body), "draining stopped") && !strings.Contains(string(body), "damaged") {
			t.Errorf("/healthz: %d %q", resp.StatusCode, body)
		}
		return true
	}, h.stderr)
	if code := h.exitOf(10 * time.Second); code != 1 {
		t.Errorf("tapes-host exited %d after its shm file was truncated, want 1\n%s", code, h.stderr())
	}
}

// -version and the version subcommand print the build, exit 0.
func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"version"}} {
		out, err := exec.Command(hostBin(t), args...).Output()
		if err != nil || !strings.HasPrefix(string(out), "tapes-host ") || !strings.Contains(string(out), "go:       go1.") {
			t.Errorf("%v: %v %q", args, err, out)
		}
	}
}

// -log-format json writes one JSON object per log line.
func TestJSONLogs(t *testing.T) {
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "j.shm"), "-http", "127.0.0.1:0", "-log-format", "json")
	h.stop(syscall.SIGTERM)
	lines := strings.Split(strings.TrimSpace(h.stderr()), "\n")
	if len(lines) < 2 {
		t.Fatalf("stderr %q", h.stderr())
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"time":"`) || !strings.HasSuffix(l, "}") || !strings.Contains(l, `"level":"INFO"`) {
			t.Errorf("not a JSON log record: %s", l)
		}
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func lineCount(t *testing.T, path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return l[len(l)-1]
}

var startedRE = regexp.MustCompile(`msg="worker started" worker=\d+ pid=(\d+)`)

// workerPids returns the pids of every worker start logged so far.
// loggedWorkers waits for the supervisor's log to name want workers and
// returns their pids. The host counts a worker as soon as it rings the
// file's doorbell, which can come before the log line naming it is read.
func loggedWorkers(t *testing.T, h *hostProc, want int) []int {
	t.Helper()
	var pids []int
	waitFor(t, 10*time.Second, "every worker's pid logged", func() bool {
		pids = workerPids(h.stderr())
		return len(pids) == want
	}, func() string { return fmt.Sprintf("worker pids %v", pids) })
	return pids
}

func workerPids(stderr string) []int {
	var pids []int
	for _, m := range startedRE.FindAllStringSubmatch(stderr, -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	return pids
}

// running reports whether pid is a live process: not gone and not a
// zombie waiting for whoever inherited it to reap it.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func psList(pids []int) string {
	var s []string
	for _, pid := range pids {
		if running(pid) {
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
			s = append(s, strconv.Itoa(pid)+" "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return strings.Join(s, "; ")
}

// runToEnd runs tapes-host to its exit (killing it after limit, a failure)
// and returns its exit code and stderr.
func runToEnd(t *testing.T, limit time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, hostBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("tapes-host %q still running after %v\n%s", args, limit, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

func probe(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady polls /readyz until it answers 200: tapes-host prints its
// endpoints before its plugins and push reporters are up.
func waitReady(t *testing.T, h *hostProc) {
	t.Helper()
	var last string
	waitFor(t, 30*time.Second, "/readyz 200", func() bool {
		code, body := probe(t, h.addr, "/readyz")
		last = body
		return code == 200
	}, func() string { return "last answer: " + last + "\nstderr:\n" + h.stderr() })
}

// SIGHUP swaps the plugin set: the new plugins start recording and the
// ones no longer configured stop, while workers keep draining.
func TestSIGHUPReloadsPlugins(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.json")
	wasm, err := filepath.Abs(filepath.Join("..", "examples", "plugin-c", "plugin-c.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg, `{"plugin": ["`+wasm+`=plugins.one"], "plugin-interval": "50ms"}`)
	h := startHost(t, "-config", cfg, "-shm", filepath.Join(dir, "p.shm"), "-http", "127.0.0.1:0")
	h.waitStat("plugins.one.collections.value", func(v float64) bool { return v >= 2 }, "plugin one collecting")

	writeFile(t, cfg, `{"plugin": ["`+wasm+`=plugins.two"], "plugin-interval": "50ms"}`)
	if err := h.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.waitStat("plugins.two.collections.value", func(v float64) bool { return v >= 2 }, "plugin two collecting after SIGHUP")
	one, _ := lookup(h.stats(), "plugins.one.collections.value")
	time.Sleep(300 * time.Millisecond) // six intervals
	if now, _ := lookup(h.stats(), "plugins.one.collections.value"); now != one {
		t.Errorf("plugin one still collecting after it was removed: %v then %v", one, now)
	}
	if !strings.Contains(h.stderr(), "SIGHUP: plugins restarted") {
		t.Errorf("no reload logged:\n%s", h.stderr())
	}
	if code, body := probe(t, h.addr, "/readyz"); code != 200 {
		t.Errorf("/readyz %d %q after the plugin reload", code, body)
	}
	h.stop(syscall.SIGTERM)
}

// Ready means the plugins loaded: a plugin whose module never loads keeps
// /readyz at 503 while the host stays healthy and drains.
func TestReadyWaitsForPlugins(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.wasm")
	writeFile(t, bad, "not a wasm module")
	h := startHost(t, "-shm", filepath.Join(dir, "r.shm"), "-http", "127.0.0.1:0", "-plugin", bad+"=plugins.bad")
	h.waitStat("tapes.host.plugins.plugins_bad.errors.crash.value", func(v float64) bool { return v >= 1 }, "the bad plugin failing")
	if code, body := probe(t, h.addr, "/readyz"); code != 503 || !strings.Contains(body, "plugins not loaded") {
		t.Errorf("/readyz %d %q with a plugin that cannot load", code, body)
	}
	if code, body := probe(t, h.addr, "/healthz"); code != 200 {
		t.Errorf("/healthz %d %q: a failing plugin is not the host's health", code, body)
	}
	h.stop(syscall.SIGTERM)
}
