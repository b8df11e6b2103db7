package bench

// The HTTP benchmarks of the original tapes documentation, reproduced: a
// handler writing "finished", timed by each library's middleware, driven by
// 30,000 keep-alive requests at concurrency 10. Servers run as their own
// processes (bench/cmd/httpbench), so the load generator in this process
// never shares a Go runtime with them.
//
// BenchmarkHTTPSingle: one server process per variant: none, tapes,
// gometrics, prometheus.
// BenchmarkHTTPWorkers: per variant, two worker processes sharing one port
// with SO_REUSEPORT: none, tapes (shm client + tapes-host), statsd (one UDP
// packet per request to a sink), zmq (PUB per worker, SUB aggregator).
//
// Each benchmark runs all its variants side by side, interleaved in chunks
// (see benchHTTP); b.N is the number of requests per variant and each
// metric is prefixed with its variant ("tapes-req/s").
//
// The full runs are heavy, so they only run when TAPES_HTTP_BENCH=1, which
// bench/scripts/run.sh sets (with -benchtime 30000x); CI's quick pass runs
// TestHTTPSmoke instead, which checks every variant answers and counts
// correctly and never looks at speed.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
)

var (
	singleVariants = []string{"none", "tapes", "gometrics", "prometheus"}
	workerVariants = []string{"none", "tapes", "statsd", "zmq"}
)

// httpWorkers is the number of worker processes: one per core of the
// machine the report was written for.
const httpWorkers = 2

var finishedBody = []byte("finished")

func BenchmarkHTTPSingle(b *testing.B) {
	benchHTTP(b, singleVariants, startHTTPSingle)
}

func BenchmarkHTTPWorkers(b *testing.B) {
	benchHTTP(b, workerVariants, startHTTPWorkers)
}

// TestHTTPSmoke runs every variant of both benchmarks briefly and checks
// that every request succeeds and that each variant's metrics saw every
// request (read back from the library, the StatsD sink, the ZeroMQ
// aggregator or tapes-host).
func TestHTTPSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	const n = 300
	for _, mode := range []struct {
		name     string
		variants []string
		start    func(testing.TB, string) *httpSetup
	}{{"single", singleVariants, startHTTPSingle}, {"workers", workerVariants, startHTTPWorkers}} {
		for _, v := range mode.variants {
			t.Run(mode.name+"/"+v, func(t *testing.T) {
				s := mode.start(t, v)
				res, err := Load(context.Background(), LoadConfig{Addr: s.addr, Requests: n, Concurrency: 10, Expect: finishedBody})
				if err != nil {
					t.Fatal(err)
				}
				if res.OK != n || res.Errors != 0 {
					t.Fatalf("%d OK, %d errors (first: %v), want %d OK", res.OK, res.Errors, res.FirstErr, n)
				}
				if q := Quantiles(res.Latencies, 0.5); q[0] <= 0 {
					t.Errorf("median latency %v, want > 0", q[0])
				}
				want := uint64(n)
				if v == "none" {
					want = 0
				}
				if got := s.waitCount(t, want); got != want {
					t.Fatalf("%s recorded %d requests, want %d", v, got, want)
				}
				s.stop(t)
			})
		}
	}
}

// benchHTTP starts every variant at once and sends each one its b.N
// requests in chunks of 1,000, taking turns in an order that rotates every
// cycle. On a shared 2-core machine, noise comes in bursts of seconds; a
// burst now lands on every variant alike instead of on whichever ran at
// that moment. The connections of each variant stay open across its chunks.
//
// After each chunk, the variant's metrics backend is given time to count
// the chunk's requests before the next variant's turn, so that one
// variant's backlog never runs during another's chunk.
//
// Per variant it reports requests per second over its own chunks, the
// median over cycles of its throughput relative to "none" in the same cycle
// (vs-none-%), the CPU time its processes used during its chunks and their
// catch-up (cpu-us/req, and the backend's part of it), the CPU its
// processes use while idle (idle-cpu-%, percent of one core over a second
// before the run), latency quantiles and the share of requests its backend
// never counted.
func benchHTTP(b *testing.B, variants []string, start func(testing.TB, string) *httpSetup) {
	if os.Getenv("TAPES_HTTP_BENCH") != "1" {
		b.Skip("heavy: run by bench/scripts/run.sh (TAPES_HTTP_BENCH=1 with -benchtime 30000x); TestHTTPSmoke checks correctness")
	}
	ctx := context.Background()
	round, _ := strconv.Atoi(os.Getenv("TAPES_HTTP_ROUND"))
	type state struct {
		name    string
		s       *httpSetup
		l       *Loader
		warm    int
		sent    int           // requests sent so far, warm-up included
		cpu     time.Duration // during own chunks and their catch-up
		back    time.Duration // the backend's part of cpu
		idle    float64       // share of a core while idle
		lat     []time.Duration
		elapsed time.Duration
		ratios  []float64 // per cycle, throughput / none's
		cycles  []float64 // per cycle, req/s
	}
	st := make([]*state, len(variants))
	for i, v := range variants {
		s := start(b, v)
		defer s.stop(b)
		l, err := NewLoader(LoadConfig{Addr: s.addr, Concurrency: 10, Expect: finishedBody})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		x := &state{name: v, s: s, l: l, warm: min(b.N, 1000), lat: make([]time.Duration, 0, b.N)}
		x.sent = x.warm
		if res := l.Run(ctx, x.warm); res.Errors != 0 {
			b.Fatalf("%s: warm-up: %d errors, first: %v", v, res.Errors, res.FirstErr)
		}
		st[i] = x
	}
	idle0 := make([]time.Duration, len(st))
	for i, x := range st {
		if x.name != "none" {
			x.s.waitCount(nil, uint64(x.sent))
		}
		idle0[i] = x.s.cpuTime()
	}
	const idleFor = time.Second
	time.Sleep(idleFor)
	for i, x := range st {
		x.idle = float64(x.s.cpuTime()-idle0[i]) / float64(idleFor)
	}
	const chunk = 1000
	cycleElapsed := make([]time.Duration, len(st))
	b.ResetTimer()
	for done, cycle := 0, 0; done < b.N; done, cycle = done+chunk, cycle+1 {
		n := min(chunk, b.N-done)
		for j := range st {
			i := (j + cycle + round) % len(st)
			x := st[i]
			c0, b0 := x.s.cpuTime(), x.s.backendCPU()
			res := x.l.Run(ctx, n)
			if res.Errors != 0 {
				b.Fatalf("%s: %d of %d requests failed, first: %v", x.name, res.Errors, n, res.FirstErr)
			}
			x.sent += n
			if x.name != "none" {
				x.s.waitCount(nil, uint64(x.sent))
			}
			x.cpu += x.s.cpuTime() - c0
			x.back += x.s.backendCPU() - b0
			x.lat = append(x.lat, res.Latencies...)
			x.elapsed += res.Elapsed
			cycleElapsed[i] = res.Elapsed
			x.cycles = append(x.cycles, float64(n)/res.Elapsed.Seconds())
		}
		for i, x := range st {
			x.ratios = append(x.ratios, cycleElapsed[0].Seconds()/cycleElapsed[i].Seconds())
		}
	}
	b.StopTimer()
	for _, x := range st {
		lost := -1.0
		if x.name != "none" {
			want := uint64(x.warm + b.N)
			got := x.s.waitCount(nil, want)
			lost = float64(want-min(got, want)) / float64(want) * 100
		}
		q := Quantiles(x.lat, 0.5, 0.9, 0.99, 1)
		v := x.name + "-"
		b.ReportMetric(float64(b.N)/x.elapsed.Seconds(), v+"req/s")
		b.ReportMetric(httpMedian(x.ratios)*100, v+"vs-none-%")
		b.ReportMetric(usOf(x.cpu)/float64(b.N), v+"cpu-us/req")
		b.ReportMetric(x.idle*100, v+"idle-cpu-%")
		if x.s.backend != nil {
			b.ReportMetric(usOf(x.back)/float64(b.N), v+"backend-cpu-us/req")
		}
		b.ReportMetric(usOf(q[0]), v+"p50-us")
		b.ReportMetric(usOf(q[1]), v+"p90-us")
		b.ReportMetric(usOf(q[2]), v+"p99-us")
		b.ReportMetric(usOf(q[3]), v+"max-us")
		if lost >= 0 {
			b.ReportMetric(lost, v+"lost-%")
		}
		if dir := os.Getenv("TAPES_HTTP_BENCH_OUT"); dir != "" && b.N > 1 {
			writeHTTPLatencies(b, dir, b.Name()+"_"+x.name, round, x.lat, x.cycles)
		}
	}
}

func httpMedian(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func usOf(d time.Duration) float64 { return float64(d) / 1e3 }

// writeHTTPLatencies writes, for the report's distributions and box plots, one
// latency per line in nanoseconds (NAME.rROUND.lat) and the throughput of
// each chunk in requests per second (NAME.rROUND.cyc).
func writeHTTPLatencies(b *testing.B, dir, name string, round int, lat []time.Duration, cycles []float64) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	for _, d := range lat {
		buf.WriteString(strconv.FormatInt(int64(d), 10))
		buf.WriteByte('\n')
	}
	base := filepath.Join(dir, fmt.Sprintf("%s.r%d", strings.ReplaceAll(name, "/", "_"), round))
	if err := os.WriteFile(base+".lat", buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	buf.Reset()
	for _, c := range cycles {
		buf.WriteString(strconv.FormatFloat(c, 'f', 1, 64))
		buf.WriteByte('\n')
	}
	if err := os.WriteFile(base+".cyc", buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
}

// httpSetup is a running variant: the processes serving addr and a way to read
// how many requests its metrics recorded.
type httpSetup struct {
	addr    string
	procs   []*httpProc
	backend *httpProc // tapes-host, the StatsD sink or the ZeroMQ aggregator, if any
	count   func() (uint64, error)
}

// waitCount polls the variant's count until it reaches want or stops
// moving for 2 s (the metrics path is asynchronous in most variants), and
// returns the last count. A nil t only reads.
func (s *httpSetup) waitCount(t testing.TB, want uint64) uint64 {
	var last uint64
	lastChange := time.Now()
	for {
		n, err := s.count()
		if err != nil && t != nil {
			t.Fatalf("reading the count: %v", err)
		}
		if n >= want && err == nil {
			return n
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		if time.Since(lastChange) > 2*time.Second {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// backendCPU returns the CPU time of the backend process, 0 if none.
func (s *httpSetup) backendCPU() time.Duration {
	if s.backend == nil {
		return 0
	}
	return s.backend.cpuTime()
}

// cpuTime sums the CPU time of the variant's processes: the server or
// workers and whatever receives their metrics.
func (s *httpSetup) cpuTime() time.Duration {
	var sum time.Duration
	for _, p := range s.procs {
		sum += p.cpuTime()
	}
	return sum
}

// stop stops every process with SIGTERM, last started first, and requires
// each to exit cleanly.
func (s *httpSetup) stop(t testing.TB) {
	t.Helper()
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop(t)
	}
	s.procs = nil
}

// startHTTPSingle starts `httpbench serve -variant v`.
func startHTTPSingle(t testing.TB, v string) *httpSetup {
	p := startHTTPProc(t, "server", nil, httpbenchBin(t), "serve", "-variant", v)
	addr := p.want(t, "ready")
	return &httpSetup{addr: addr, procs: []*httpProc{p}, count: func() (uint64, error) { return httpGetCount("http://" + addr + "/count") }}
}

// startHTTPWorkers starts the sink or aggregator of variant v (if any) and
// httpWorkers worker processes sharing one port.
func startHTTPWorkers(t testing.TB, v string) *httpSetup {
	addr := httpFreePort(t)
	s := &httpSetup{addr: addr, count: func() (uint64, error) { return 0, nil }}
	args := []string{"worker", "-variant", v, "-addr", addr}
	var env []string
	switch v {
	case "tapes":
		h := startHTTPProc(t, "tapes-host", nil, httpTapesHostBin(t), "-shm", filepath.Join(t.TempDir(), "bench.shm"), "-http", "127.0.0.1:0")
		s.procs, s.backend = append(s.procs, h), h
		env = append(env, "TAPES_SHM="+h.want(t, "TAPES_SHM="))
		stats := "http://" + h.want(t, "metrics: http://") + "/stats"
		s.count = func() (uint64, error) { return hostTimerCounts(stats) }
	case "statsd":
		sink := startHTTPProc(t, "statsd-sink", nil, httpbenchBin(t), "statsd-sink")
		s.procs, s.backend = append(s.procs, sink), sink
		args = append(args, "-statsd", sink.want(t, "udp "))
		ctl := "http://" + sink.want(t, "ready") + "/count"
		s.count = func() (uint64, error) { return httpGetCount(ctl) }
	case "zmq":
		agg := startHTTPProc(t, "zmq-agg", nil, httpbenchBin(t), "zmq-agg")
		s.procs, s.backend = append(s.procs, agg), agg
		args = append(args, "-zmq", agg.want(t, "zmq "))
		ctl := "http://" + agg.want(t, "ready") + "/count"
		s.count = func() (uint64, error) { return httpGetCount(ctl) }
	}
	// One worker per core, each with one P, like pre-forked workers of a
	// single-threaded runtime; the extra processes (host, sink,
	// aggregator) compete for the same cores, as they would in production.
	env = append(env, "GOMAXPROCS=1")
	for i := range httpWorkers {
		w := startHTTPProc(t, fmt.Sprintf("worker%d", i), env, httpbenchBin(t), args...)
		w.want(t, "ready")
		s.procs = append(s.procs, w)
	}
	return s
}

// hostTimerCounts sums the count of every http.*.latency timer in
// tapes-host's /stats.
func hostTimerCounts(url string) (uint64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var st struct {
		HTTP map[string]struct {
			Latency struct {
				Count uint64 `json:"count"`
			} `json:"latency"`
		} `json:"http"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, err
	}
	var n uint64
	for _, r := range st.HTTP {
		n += r.Latency.Count
	}
	return n, nil
}

func httpGetCount(url string) (uint64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// httpFreePort returns a loopback address no one listened on a moment ago.
func httpFreePort(t testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreeLoopbackPort(t, "tcp")))
}

func httpbenchBin(t testing.TB) string {
	return builds.Path(t, "httpbench", testenv.GoBuild("bench", "./cmd/httpbench"))
}

// httpTapesHostBin builds tapes-host in the root module.
func httpTapesHostBin(t testing.TB) string {
	return builds.Path(t, "tapes-host", testenv.GoBuild(".", "./cmd/tapes-host"))
}

// httpProc is a running process whose stdout lines are collected.
type httpProc struct {
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	errb   bytes.Buffer
	more   chan struct{} // closed and replaced when a line arrives
	exited chan struct{} // closed when the process has exited; err is set
	err    error
}

func startHTTPProc(t testing.TB, name string, env []string, path string, args ...string) *httpProc {
	t.Helper()
	p := &httpProc{name: name, cmd: exec.Command(path, args...), more: make(chan struct{}), exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = httpLockedWriter{&p.mu, &p.errb}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.more)
			p.more = make(chan struct{})
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// want waits for a stdout line containing prefix and returns what follows
// it up to the next space.
func (p *httpProc) want(t testing.TB, prefix string) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for seen := 0; ; {
		p.mu.Lock()
		for ; seen < len(p.lines); seen++ {
			if _, rest, ok := strings.Cut(p.lines[seen], prefix); ok {
				p.mu.Unlock()
				v, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
				return strings.TrimSuffix(v, "/metrics")
			}
		}
		more := p.more
		p.mu.Unlock()
		select {
		case <-more:
		case <-p.exited:
			t.Fatalf("%s exited before printing %q: %v\nstderr:\n%s", p.name, prefix, p.err, p.stderr())
		case <-deadline:
			t.Fatalf("%s did not print %q within 30s\nstderr:\n%s", p.name, prefix, p.stderr())
		}
	}
}

func (p *httpProc) stderr() string { p.mu.Lock(); defer p.mu.Unlock(); return p.errb.String() }

func (p *httpProc) stop(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("%s: exit after SIGTERM: %v\nstderr:\n%s", p.name, p.err, p.stderr())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not exit within 30s of SIGTERM", p.name)
	}
}

// cpuTime sums the CPU time of the process's threads from
// /proc/PID/task/*/schedstat, which counts in nanoseconds (/proc/PID/stat
// counts in 10 ms ticks, too coarse for a run of one or two seconds).
func (p *httpProc) cpuTime() time.Duration {
	dir := fmt.Sprintf("/proc/%d/task", p.cmd.Process.Pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, task.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		sum += time.Duration(ns)
	}
	return sum
}

type httpLockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l httpLockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
