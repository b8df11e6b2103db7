//go:build linux

package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapes-go/tapes/internal/testenv"
)

// The HTTP attack tests: connection floods, slowloris and scrape floods
// against the real tapes-host, with real workers recording beside them.
// Every bound below is a generous "it happened at all", not a speed claim.

func rateworkerBin(t testing.TB) string {
	return builds.Path(t, "rateworker", testenv.GoBuild(".", "./tests/rateworker"))
}

// rateWorker runs tests/rateworker against shmPath; wait returns how many
// events it recorded, after requiring that its ring dropped none.
type rateWorker struct {
	t   *testing.T
	cmd *exec.Cmd
	out strings.Builder
}

func startRateWorker(t *testing.T, shmPath string, args ...string) *rateWorker {
	t.Helper()
	w := &rateWorker{t: t, cmd: exec.Command(rateworkerBin(t), args...)}
	w.cmd.Env = append(os.Environ(), "TAPES_SHM="+shmPath)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if w.cmd.ProcessState == nil {
			_ = w.cmd.Process.Kill()
			_ = w.cmd.Wait()
		}
	})
	return w
}

var recordedLine = regexp.MustCompile(`recorded (\d+) dropped (\d+)`)

func (w *rateWorker) wait() int64 { return w.waitDrops(false) }

// waitDrops is wait; allowDrops skips the no-drop requirement (for workers
// that only fill the registry and record again what their ring dropped).
func (w *rateWorker) waitDrops(allowDrops bool) int64 {
	w.t.Helper()
	if err := w.cmd.Wait(); err != nil {
		w.t.Fatalf("rateworker: %v\n%s", err, w.out.String())
	}
	m := recordedLine.FindStringSubmatch(w.out.String())
	if m == nil {
		w.t.Fatalf("rateworker printed %q", w.out.String())
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	if m[2] != "0" && !allowDrops {
		w.t.Errorf("the worker's ring dropped %s of %d events: the host stopped draining", m[2], n)
	}
	return n
}

// scraper reads the host's endpoints with its own connections and a
// bound per request, so that a host that never answers fails the test
// instead of hanging it.
type scraper struct {
	t    *testing.T
	addr string
	cl   *http.Client
}

func newScraper(t *testing.T, addr string) *scraper {
	return &scraper{t: t, addr: addr, cl: &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
}

func (s *scraper) get(path string) ([]byte, error) {
	resp, err := s.cl.Get("http://" + s.addr + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return b, err
}

func (s *scraper) stats() map[string]any {
	s.t.Helper()
	b, err := s.get("/stats")
	if err != nil {
		s.t.Fatalf("GET /stats: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		s.t.Fatal(err)
	}
	return m
}

func (s *scraper) value(path string) float64 {
	s.t.Helper()
	v, ok := lookup(s.stats(), path)
	if !ok {
		s.t.Fatalf("/stats has no %s", path)
	}
	return v
}

// waitValue polls /stats (the host renders at most once per -http-cache)
// until path satisfies ok.
func (s *scraper) waitValue(path string, ok func(float64) bool, what string) float64 {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var v float64
	var found bool
	for time.Now().Before(deadline) {
		if v, found = lookup(s.stats(), path); found && ok(v) {
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("%s: %s = %v (found %v) after 30s", what, path, v, found)
	return v
}

// Thousands of idle, silent and half-sent connections against a host whose
// fd limit is lowered to 400 (prlimit on the running process): scrapes keep
// being answered, the host keeps draining a worker without loss, and a
// SIGKILLed worker's slot is still reclaimed (its /proc read needs a free
// descriptor). Without the cap and the eviction the host runs out of
// descriptors: accept fails and scrapes hang.
func TestHTTPConnectionFloodCannotLockOutScrapers(t *testing.T) {
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "t.shm"), "-ring", "2048",
		"-http", "127.0.0.1:0", "-http-cache", "100ms")
	const nofile = 400
	lim := unix.Rlimit{Cur: nofile, Max: nofile}
	if err := unix.Prlimit(h.cmd.Process.Pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatalf("prlimit: %v", err)
	}
	s := newScraper(t, h.addr)
	// The cap follows the new limit within a second.
	s.waitValue("tapes.host.http.connections.limit.value", func(v float64) bool { return v >= 1 && v <= nofile-64 }, "cap under the fd limit")

	victim := worker(t, h.shm, "-n", "10", "-hold")
	s.waitValue("tapes.host.shm.workers.value", func(v float64) bool { return v >= 1 }, "held worker attached")
	rw := startRateWorker(t, h.shm, "-prefix", "load", "-rate", "2000", "-duration", "6s")

	const flood = 3000
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var scrapes, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// A real scraper, a fresh connection each time, throughout.
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := s.get("/metrics"); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			} else {
				scrapes.Add(1)
			}
		}
	}()
	for i := range flood {
		c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
		if err != nil {
			continue // the backlog is full for a moment: the flood goes on
		}
		conns = append(conns, c)
		switch i % 3 {
		case 0: // silent
		case 1: // a keep-alive connection, idle after its answer
			io.WriteString(c, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
		case 2: // headers begun, never finished
			io.WriteString(c, "GET /stats HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		}
		if i == flood/2 {
			if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = victim.Wait()
		}
	}
	n := rw.wait() // recording through the whole flood
	close(stop)
	wg.Wait()
	if failed.Load() > 0 || scrapes.Load() < 5 {
		t.Fatalf("during a flood of %d connections: %d scrapes answered, %d failed (first: %v)",
			len(conns), scrapes.Load(), failed.Load(), firstErr.Load())
	}
	s.waitValue("load.ticks.value", eq(float64(n)), "every event the worker recorded")
	s.waitValue("tapes.host.shm.reclaimed.value", func(v float64) bool { return v >= 1 }, "SIGKILLed worker's slot reclaimed")
	st := s.stats()
	ev, _ := lookup(st, "tapes.host.http.connections.evicted.value")
	open, _ := lookup(st, "tapes.host.http.connections.open.value")
	limit, _ := lookup(st, "tapes.host.http.connections.limit.value")
	if ev < flood/2 || open > limit {
		t.Errorf("evicted %v of %d flood connections; %v open, cap %v", ev, len(conns), open, limit)
	}
	t.Logf("flood of %d connections: %d scrapes answered, evicted %v, cap %v, %d events drained", len(conns), scrapes.Load(), ev, limit, n)
	h.stop(syscall.SIGTERM)
}

// Slowloris: connections trickling their headers a byte at a time are
// closed at -http-read-header-timeout, while scrapes are answered.
func TestHTTPSlowlorisClosedByTimeout(t *testing.T) {
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "t.shm"), "-http", "127.0.0.1:0",
		"-http-read-header-timeout", "1s")
	s := newScraper(t, h.addr)
	const n = 50
	closed := make(chan time.Duration, n)
	stop := make(chan struct{})
	defer close(stop)
	start := time.Now()
	for range n {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /stats HTTP/1.1\r\nHost: x\r\n")
		go func() {
			// Reads end when the host closes (after its 408, if any).
			io.Copy(io.Discard, c)
			closed <- time.Since(start)
		}()
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				if _, err := io.WriteString(c, "x"); err != nil {
					return
				}
			}
		}()
	}
	if _, err := s.get("/metrics"); err != nil {
		t.Fatalf("scrape beside the slowloris connections: %v", err)
	}
	var last time.Duration
	for i := range n {
		select {
		case d := <-closed:
			last = d
		case <-time.After(20 * time.Second):
			t.Fatalf("%d of %d slowloris connections still open after 20s", n-i, n)
		}
	}
	if v := s.value("tapes.host.http.timeouts.header.value"); v < n {
		t.Errorf("tapes.host.http.timeouts.header = %v, want >= %d", v, n)
	}
	t.Logf("%d slowloris connections closed, the last after %v", n, last)
	h.stop(syscall.SIGTERM)
}

// 200 clients scraping /stats and /metrics as fast as they can, with 4,000
// histograms in the registry and a worker recording 10,000 events/s: the
// host renders about once per -http-cache period instead of once per
// scrape, its memory stays bounded, and the worker loses no event.
func TestHTTPScrapeFloodSharesRendering(t *testing.T) {
	// The default ring (16384 records) holds 1.6 s of the worker's
	// events: a drain loop stalled that long behind rendering loses events
	// (per-request rendering lost 47% here, with a smaller ring).
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "t.shm"),
		"-http", "127.0.0.1:0", "-http-cache", "1s")
	s := newScraper(t, h.addr)
	const fillers, perFiller = 4, 1000
	var fill []*rateWorker
	for i := range fillers {
		fill = append(fill, startRateWorker(t, h.shm, "-prefix", fmt.Sprintf("fill%d", i), "-histograms", strconv.Itoa(perFiller)))
	}
	for _, w := range fill {
		w.waitDrops(true)
	}
	for i := range fillers {
		s.waitValue(fmt.Sprintf("fill%d.h%d.count", i, perFiller-1), func(v float64) bool { return v >= 64 }, "histograms filled")
	}
	renders := func(ep string) float64 { return s.value("tapes.host.http." + ep + ".renders.count") }
	before := map[string]float64{"stats": renders("stats"), "metrics": renders("metrics")}

	rw := startRateWorker(t, h.shm, "-prefix", "load", "-rate", "10000", "-duration", "5s")
	const clients = 200
	const floodFor = 4 * time.Second
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	cl := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	defer tr.CloseIdleConnections()
	var requests, errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	begin := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := []string{"/stats", "/metrics"}[i%2]
			for time.Since(begin) < floodFor {
				resp, err := cl.Get("http://" + h.addr + path)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					return
				}
				requests.Add(1)
			}
		}()
	}
	wg.Wait()
	took := time.Since(begin)
	n := rw.wait()
	if errs.Load() > 0 {
		t.Fatalf("%d scrapes failed (first: %v)", errs.Load(), firstErr.Load())
	}
	// One render per period per endpoint, plus one at each edge.
	maxRenders := took.Seconds()/1.0 + 3
	for ep, b := range before {
		if r := renders(ep) - b; r > maxRenders {
			t.Errorf("/%s rendered %v times for the flood's %d requests in %v, want <= %v (one per -http-cache)",
				ep, r, requests.Load(), took.Round(time.Millisecond), maxRenders)
		}
	}
	s.waitValue("load.ticks.value", eq(float64(n)), "every event the worker recorded")
	peak := peakRSS(t, h.cmd.Process.Pid)
	const rssBound = 256 << 20
	if peak > rssBound {
		t.Errorf("host peak RSS %d MiB during the scrape flood, want <= %d MiB", peak>>20, rssBound>>20)
	}
	t.Logf("%d scrapes by %d clients in %v; renders stats %v metrics %v; peak RSS %d MiB; %d events drained, none lost",
		requests.Load(), clients, took.Round(time.Millisecond), renders("stats")-before["stats"],
		renders("metrics")-before["metrics"], peak>>20, n)
	h.stop(syscall.SIGTERM)
}

// peakRSS is the process's high-water resident set size (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/pid/status")
	return 0
}
