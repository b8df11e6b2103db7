// Package tests holds the end-to-end tests: the real tapes-host binary, real
// worker processes and real signals.
package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
)

// builds holds tapes-host, testworker and the examples, each built once
// per test binary.
var builds testenv.Builds

func TestMain(m *testing.M) {
	os.Exit(builds.Run(m))
}

func hostBin(t testing.TB) string {
	return builds.Path(t, "tapes-host", testenv.GoBuild(".", "./cmd/tapes-host"))
}

func testworkerBin(t testing.TB) string {
	return builds.Path(t, "testworker", testenv.GoBuild(".", "./tests/testworker"))
}

// hostProc is a running tapes-host.
type hostProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string // HTTP address
	shm    string // shm file path
	mu     sync.Mutex
	out    bytes.Buffer // stdout
	errb   bytes.Buffer // stderr
	waited chan error
	stats0 map[string]any // a /stats read kept by a test for after the host exits
}

var metricsLine = regexp.MustCompile(`metrics: http://([^/\s]+)/metrics`)
var shmLine = regexp.MustCompile(`TAPES_SHM=(\S+)`)

// startHost starts tapes-host with args (HTTP on a free loopback port unless
// args say otherwise) and waits until it prints its endpoints.
func startHost(t *testing.T, args ...string) *hostProc {
	t.Helper()
	return startHostBin(t, hostBin(t), args...)
}

// startHostBin is startHost with the tapes-host binary at bin.
func startHostBin(t *testing.T, bin string, args ...string) *hostProc {
	t.Helper()
	h := &hostProc{t: t, waited: make(chan error, 1)}
	h.cmd = exec.Command(bin, args...)
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.cmd.Stderr = lockedWriter{&h.mu, &h.errb}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			h.mu.Lock()
			h.out.WriteString(line + "\n")
			if m := shmLine.FindStringSubmatch(line); m != nil {
				h.shm = m[1]
			}
			if m := metricsLine.FindStringSubmatch(line); m != nil {
				h.addr = m[1]
			}
			ok := h.addr != "" && h.shm != ""
			h.mu.Unlock()
			if ok && !signalled {
				signalled = true
				close(ready)
			}
		}
		h.waited <- h.cmd.Wait()
	}()
	t.Cleanup(func() {
		if h.cmd.ProcessState == nil {
			if t.Failed() {
				// A host that stopped draining says where: SIGQUIT makes
				// the Go runtime print every goroutine's stack and exit.
				_ = h.cmd.Process.Signal(syscall.SIGQUIT)
				select {
				case <-h.waited:
				case <-time.After(5 * time.Second):
					_ = h.cmd.Process.Kill()
					<-h.waited
				}
			} else {
				_ = h.cmd.Process.Kill()
				<-h.waited
			}
		}
		if t.Failed() {
			t.Logf("tapes-host stderr:\n%s", h.stderr())
		}
	})
	select {
	case <-ready:
	case err := <-h.waited:
		t.Fatalf("tapes-host exited before it was ready: %v\nstdout:\n%s\nstderr:\n%s", err, h.stdout(), h.stderr())
	case <-time.After(30 * time.Second):
		t.Fatalf("tapes-host not ready after 30s\nstdout:\n%s\nstderr:\n%s", h.stdout(), h.stderr())
	}
	return h
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (h *hostProc) stdout() string { h.mu.Lock(); defer h.mu.Unlock(); return h.out.String() }
func (h *hostProc) stderr() string { h.mu.Lock(); defer h.mu.Unlock(); return h.errb.String() }

// stop sends sig and requires a clean exit (code 0) within 30 s.
func (h *hostProc) stop(sig syscall.Signal) {
	h.t.Helper()
	if err := h.cmd.Process.Signal(sig); err != nil {
		h.t.Fatal(err)
	}
	select {
	case err := <-h.waited:
		if err != nil {
			h.t.Fatalf("tapes-host exit after %v: %v\nstderr:\n%s", sig, err, h.stderr())
		}
	case <-time.After(30 * time.Second):
		h.t.Fatalf("tapes-host did not stop within 30s of %v\nstderr:\n%s", sig, h.stderr())
	}
}

// httpClient gives up on a host that stopped answering (a frozen host
// fails the test instead of hanging it).
var httpClient = &http.Client{Timeout: 10 * time.Second}

func (h *hostProc) get(path string) []byte {
	h.t.Helper()
	resp, err := httpClient.Get("http://" + h.addr + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		h.t.Fatalf("GET %s: %v %d %s", path, err, resp.StatusCode, b)
	}
	return b
}

func (h *hostProc) stats() map[string]any {
	h.t.Helper()
	var m map[string]any
	if err := json.Unmarshal(h.get("/stats"), &m); err != nil {
		h.t.Fatal(err)
	}
	return m
}

// lookup reads a value from a stats tree by dotted path ("a.b.count").
func lookup(tree map[string]any, path string) (float64, bool) {
	var node any = tree
	for _, seg := range strings.Split(path, ".") {
		m, ok := node.(map[string]any)
		if !ok {
			return 0, false
		}
		if node, ok = m[seg]; !ok {
			return 0, false
		}
	}
	v, ok := node.(float64)
	return v, ok
}

// waitStat polls /stats until the value at path satisfies ok.
func (h *hostProc) waitStat(path string, ok func(float64) bool, what string) float64 {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var v float64
	var found bool
	for time.Now().Before(deadline) {
		v, found = lookup(h.stats(), path)
		if found && ok(v) {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("%s: %s = %v (found %v) after 20s\nstats: %s\nstderr:\n%s", what, path, v, found, h.get("/stats"), h.stderr())
	return v
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

// worker starts testworker against shmPath and returns its command.
func worker(t *testing.T, shmPath string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(testworkerBin(t), args...)
	cmd.Env = append(os.Environ(), "TAPES_SHM="+shmPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}
