package prometheus

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tapes-go/tapes/registry"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

// samples parses the output into name{labels} -> value, failing on any
// line that is not a comment or a well-formed sample.
func samples(t *testing.T, out string) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if strings.HasPrefix(line, "# HELP ") || strings.HasPrefix(line, "# TYPE ") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("malformed line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("malformed value in %q: %v", line, err)
		}
		if _, dup := m[line[:i]]; dup {
			t.Fatalf("sample %q written twice", line[:i])
		}
		m[line[:i]] = v
	}
	return m
}

func write(t *testing.T, r *registry.Registry, opts Options) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, r, opts); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestCounterAndGaugeExactOutput(t *testing.T) {
	r := registry.New()
	r.Counter("jobs.done").Add(42)
	r.Gauge("queue.depth", nil).Set(3.5)
	got := write(t, r, Options{Namespace: "app"})
	want := `# HELP app_jobs_done jobs.done (counter)
# TYPE app_jobs_done gauge
app_jobs_done 42
# HELP app_queue_depth queue.depth (gauge)
# TYPE app_queue_depth gauge
app_queue_depth 3.5
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestEveryKindMapsAsDocumented(t *testing.T) {
	clk := newClock()
	r := registry.New(registry.WithClock(clk))
	m := r.Meter("api.calls")
	h := r.Histogram("payload.size")
	tm := r.Timer("http.latency")
	for i := 1; i <= 100; i++ {
		m.Mark(1)
		h.Update(float64(i))
		tm.Update(time.Duration(i) * time.Millisecond)
	}
	clk.Add(6 * time.Second) // one meter tick, so the rates are set
	s := samples(t, write(t, r, Options{Rates: true}))

	if s["api_calls_total"] != 100 {
		t.Errorf("api_calls_total = %v, want 100", s["api_calls_total"])
	}
	for _, k := range []string{"api_calls_m1_rate", "api_calls_m5_rate", "api_calls_m15_rate", "api_calls_mean_rate", "http_latency_m1_rate"} {
		if v, ok := s[k]; !ok || v <= 0 {
			t.Errorf("%s = %v (present %v), want a positive rate", k, v, ok)
		}
	}
	if s["payload_size_count"] != 100 || s["payload_size_sum"] != 5050 {
		t.Errorf("histogram count/sum = %v/%v, want 100/5050", s["payload_size_count"], s["payload_size_sum"])
	}
	if q := s[`payload_size{quantile="0.5"}`]; math.Abs(q-50)/50 > 0.03 {
		t.Errorf("histogram q50 = %v, want ~50", q)
	}
	if q := s[`payload_size{quantile="0.999"}`]; math.Abs(q-100)/100 > 0.03 {
		t.Errorf("histogram q999 = %v, want ~100", q)
	}
	if s["http_latency_seconds_count"] != 100 || math.Abs(s["http_latency_seconds_sum"]-5.05) > 1e-9 {
		t.Errorf("timer count/sum = %v/%v, want 100/5.05 s", s["http_latency_seconds_count"], s["http_latency_seconds_sum"])
	}
	if q := s[`http_latency_seconds{quantile="0.99"}`]; math.Abs(q-0.099)/0.099 > 0.03 {
		t.Errorf("timer q99 = %v s, want ~0.099", q)
	}
	for _, q := range []string{"0.5", "0.75", "0.95", "0.98", "0.99", "0.999"} {
		if _, ok := s[`http_latency_seconds{quantile="`+q+`"}`]; !ok {
			t.Errorf("timer quantile %s missing", q)
		}
	}
}

func TestEmptyWindowQuantilesAreNaN(t *testing.T) {
	r := registry.New()
	r.Histogram("idle")
	out := write(t, r, Options{})
	if !strings.Contains(out, "idle{quantile=\"0.99\"} NaN\n") || !strings.Contains(out, "idle_count 0\n") {
		t.Fatalf("empty histogram written as:\n%s", out)
	}
}

func TestNonFiniteGaugeValues(t *testing.T) {
	r := registry.New()
	r.Gauge("a", func() float64 { return math.Inf(1) })
	r.Gauge("b", func() float64 { return math.Inf(-1) })
	r.Gauge("c", func() float64 { return math.NaN() })
	out := write(t, r, Options{})
	for _, l := range []string{"a +Inf\n", "b -Inf\n", "c NaN\n"} {
		if !strings.Contains(out, l) {
			t.Errorf("missing %q in:\n%s", l, out)
		}
	}
}

func TestMetricName(t *testing.T) {
	for _, c := range []struct{ ns, name, want string }{
		{"", "a.b.c", "a_b_c"},
		{"", "my-app.latency", "my_app_latency"},
		{"", "http.requestCount", "http_request_count"},
		{"", "HTTPServer.v2Calls", "httpserver_v2_calls"},
		{"tapes", "x", "tapes_x"},
		{"myApp", "9lives", "my_app_9lives"},
		{"a.b", "c", "a_b_c"},
	} {
		got, err := MetricName(c.ns, c.name)
		if err != nil || got != c.want {
			t.Errorf("MetricName(%q, %q) = %q, %v; want %q", c.ns, c.name, got, err, c.want)
		}
	}
	for _, c := range []struct{ ns, name string }{{"", "9lives"}, {"", "__x"}, {"", "_-x"}, {"bad ns", "x"}, {"9", "x"}} {
		if got, err := MetricName(c.ns, c.name); err == nil {
			t.Errorf("MetricName(%q, %q) = %q, want an error", c.ns, c.name, got)
		}
	}
}

func TestInvalidNamespaceWritesNothing(t *testing.T) {
	r := registry.New()
	r.Counter("x").Inc()
	var b bytes.Buffer
	err := Write(&b, r, Options{Namespace: "no spaces"})
	if err == nil || b.Len() != 0 {
		t.Fatalf("Write with a bad namespace: err=%v, wrote %q", err, b.String())
	}
	rec := httptest.NewRecorder()
	Handler(r, Options{Namespace: "no spaces"}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("handler status %d for a bad namespace, want 500", rec.Code)
	}
}

func TestSkipsCollisionsAndUnexpressibleNamesWhole(t *testing.T) {
	r := registry.New()
	r.Counter("a.b").Add(1)
	r.Counter("a_b").Add(2)            // same output as a.b
	r.Meter("x").Mark(3)               // writes x_total
	r.Gauge("x_total", nil).Set(4)     // would write x_total again, as a gauge
	r.Histogram("h").Update(1)         // writes h, h_sum, h_count
	r.Gauge("h_count", nil).Set(5)     // collides with the summary's count
	r.Gauge("queue.count", nil).Set(6) // no histogram h named queue: written
	r.Counter("9lives").Inc()
	r.Timer("t")
	r.Meter("t_m1")                  // writes t_m1_total, t_m1_m1_rate...: no clash
	r.Gauge("t_m1_rate", nil).Set(7) // collides with the timer's t_m1_rate

	skipped := map[string]error{}
	out := write(t, r, Options{Rates: true, OnSkip: func(name string, err error) { skipped[name] = err }})
	s := samples(t, out)

	want := map[string]error{
		"a_b": ErrCollision, "x_total": ErrCollision, "h_count": ErrCollision,
		"9lives": ErrUnexpressible, "t_m1_rate": ErrCollision,
	}
	for name, werr := range want {
		if !errors.Is(skipped[name], werr) {
			t.Errorf("%s: skip error %v, want %v", name, skipped[name], werr)
		}
	}
	if len(skipped) != len(want) {
		t.Errorf("skipped %v, want exactly %v", skipped, want)
	}
	if s["a_b"] != 1 || s["x_total"] != 3 || s["h_count"] != 1 || s["t_m1_rate"] != 0 || s["queue_count"] != 6 {
		t.Errorf("the first metric in name order must win: %v", s)
	}
	if _, ok := s["t_m1_total"]; !ok {
		t.Errorf("meter t_m1 missing")
	}
	if strings.Contains(out, "9lives") {
		t.Errorf("skipped metric written:\n%s", out)
	}
}

// everyKind holds every kind of metric and names that need mapping.
func everyKind() *registry.Registry {
	r := registry.New()
	r.Counter("jobs.done").Add(7)
	r.Counter("my-app.http.requestsServed").Add(3)
	r.Gauge("cache.hitRatio", nil).Set(0.75)
	r.Gauge("Queue.Depth", func() float64 { return 12 })
	r.Gauge("temperature", func() float64 { return math.NaN() })
	r.Meter("api.v2.calls").Mark(5)
	r.Histogram("payload-size").Update(1024)
	r.Histogram("empty.hist")
	tm := r.Timer("db.Query.time")
	tm.Update(3 * time.Millisecond)
	tm.Update(9 * time.Millisecond)
	r.Timer("idle.timer")
	// Left out, so that the output stays clean:
	r.Counter("jobs_done").Inc()
	r.Counter("5xx").Inc()
	return r
}

func TestPromtoolCheckMetrics(t *testing.T) {
	_, promtool := testenv.Prometheus(t)
	for _, ns := range []string{"", "tapes"} {
		var skipped []string
		var b bytes.Buffer
		if err := Write(&b, everyKind(), Options{Namespace: ns, OnSkip: func(n string, err error) { skipped = append(skipped, n) }}); err != nil {
			t.Fatal(err)
		}
		want := 2 // jobs_done and 5xx
		if ns != "" {
			want = 1 // 5xx can follow a namespace
		}
		if len(skipped) != want {
			t.Errorf("namespace %q: skipped %v, want %d", ns, skipped, want)
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(b.Bytes())
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("promtool check metrics (namespace %q): %v\n%s\ninput:\n%s", ns, err, out, b.String())
		}
	}
}

func TestPromtoolCatchesBrokenInput(t *testing.T) {
	// Guards the test above: the tool must really reject what it should.
	_, promtool := testenv.Prometheus(t)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader("# TYPE jobs counter\njobs 1\n")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("promtool accepted a counter without _total or HELP: %s", out)
	}
}

func TestHandlerContentType(t *testing.T) {
	srv := httptest.NewServer(Handler(everyKind(), Options{Namespace: "tapes", OnSkip: func(string, error) {}}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != ContentType {
		t.Fatalf("Content-Type %q, want %q", ct, ContentType)
	}
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if s := samples(t, b.String()); s["tapes_jobs_done"] != 7 {
		t.Fatalf("tapes_jobs_done = %v in\n%s", s["tapes_jobs_done"], b.String())
	}
}

type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.n++; f.n > 1 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestWriteErrorIsReturned(t *testing.T) {
	r := registry.New()
	for i := 0; i < 2000; i++ {
		r.Counter(fmt.Sprintf("c%04d", i)).Inc()
	}
	if err := Write(&failingWriter{}, r, Options{}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Write into a failing writer returned %v", err)
	}
}

func registry10k() *registry.Registry {
	r := registry.New()
	for i := 0; i < 10000; i++ {
		name := fmt.Sprintf("svc%d.endpoint%d.x", i%10, i)
		switch i % 5 {
		case 0:
			r.Counter(name).Add(int64(i))
		case 1:
			r.Gauge(name, nil).Set(float64(i))
		case 2:
			r.Meter(name).Mark(int64(i))
		case 3:
			r.Histogram(name).Update(float64(i))
		case 4:
			r.Timer(name).Update(time.Duration(i) * time.Microsecond)
		}
	}
	return r
}

func BenchmarkWrite10k(b *testing.B) {
	r := registry10k()
	benchEncode(b, r, Options{Namespace: "tapes"}, FormatText)
}

// BenchmarkWrite10kScalar leaves out histograms and timers, whose snapshots
// (in package registry) are most of BenchmarkWrite10k's time, to show what
// the writer itself costs.
func BenchmarkWrite10kScalar(b *testing.B) {
	r := registry.New()
	for i := 0; i < 10000; i++ {
		name := fmt.Sprintf("svc%d.endpoint%d.x", i%10, i)
		switch i % 3 {
		case 0:
			r.Counter(name).Add(int64(i))
		case 1:
			r.Gauge(name, nil).Set(float64(i))
		case 2:
			r.Meter(name).Mark(int64(i))
		}
	}
	benchEncode(b, r, Options{Namespace: "tapes"}, FormatText)
}

// BenchmarkWrite10kTimers is a scrape of 10,000 timers in the text format:
// the snapshot of each (quantiles over the window) and its lines.
func BenchmarkWrite10kTimers(b *testing.B) { benchTimers(b, Options{Namespace: "tapes"}, FormatText) }

// BenchmarkWrite10kTimersRates writes the rate gauges too, as the writer
// before expo always did: the like-for-like comparison with it.
func BenchmarkWrite10kTimersRates(b *testing.B) {
	benchTimers(b, Options{Namespace: "tapes", Rates: true}, FormatText)
}

func BenchmarkWrite10kTimersClassic(b *testing.B) {
	benchTimers(b, Options{Namespace: "tapes", ClassicBuckets: true}, FormatText)
}

func BenchmarkWrite10kTimersProtobuf(b *testing.B) {
	benchTimers(b, Options{Namespace: "tapes"}, FormatProtobuf)
}

func BenchmarkWrite10kTimersOpenMetrics(b *testing.B) {
	benchTimers(b, Options{Namespace: "tapes"}, FormatOpenMetrics)
}

func benchTimers(b *testing.B, o Options, f Format) {
	r := registry.New()
	for i := 0; i < 10000; i++ {
		t := r.Timer(fmt.Sprintf("svc%d.endpoint%d.latency", i%10, i))
		for j := 1; j <= 20; j++ {
			t.Update(time.Duration(i*j) * time.Microsecond)
		}
	}
	benchEncode(b, r, o, f)
}

func benchEncode(b *testing.B, r *registry.Registry, o Options, f Format) {
	var buf bytes.Buffer
	Encode(&buf, r, f, o)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf.Reset()
		if err := Encode(&buf, r, f, o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandler10kTimers is a scrape through Handler (MaxAge 0: a render
// per request), which keeps its scratch state between renders.
func BenchmarkHandler10kTimers(b *testing.B) {
	r := registry.New()
	for i := 0; i < 10000; i++ {
		t := r.Timer(fmt.Sprintf("svc%d.endpoint%d.latency", i%10, i))
		for j := 1; j <= 20; j++ {
			t.Update(time.Duration(i*j) * time.Microsecond)
		}
	}
	h := Handler(r, Options{Namespace: "tapes"})
	req := httptest.NewRequest("GET", "/metrics", nil)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
		if i == 0 {
			b.SetBytes(int64(rec.Body.Len()))
		}
	}
}
