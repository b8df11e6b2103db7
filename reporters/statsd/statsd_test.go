package statsd

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/reportertest"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters"
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

func near(got, want, rel float64) bool { return math.Abs(got-want) <= rel*math.Abs(want) }

func TestNamesDeltasGaugesTimersInRealStatsD(t *testing.T) {
	sd := reportertest.StartStatsD(t)
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := registry.New(registry.WithClock(clk))
	c := r.Counter("jobs.done")
	g := r.Gauge("queue.depth", nil)
	m := r.Meter("api.calls")
	tm := r.Timer("db.query")
	h := r.Histogram("payload.size")
	r.Gauge("broken", func() float64 { return math.NaN() })
	r.Timer("idle.timer")
	// Names already ending in the suffix (tapes-host has
	// tapes.host.shm.dropped.total) do not get it twice.
	r.Counter("tapes.host.shm.dropped.total").Add(7)
	r.Gauge("level.value", nil).Set(2)

	c.Add(5)
	g.Set(3)
	m.Mark(4)
	for _, d := range []time.Duration{10, 20, 30} {
		tm.Update(d * time.Millisecond)
	}
	h.Update(100)
	h.Update(200)
	clk.Add(6 * time.Second) // one rate tick

	rep, err := New(sd.Addr, r, Options{Prefix: "app", FlushInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	ctx := context.Background()
	from := len(sd.Flushes())
	if err := rep.Report(ctx); err != nil {
		t.Fatal(err)
	}
	// Let the first report land before changing the gauge, so that StatsD
	// holds 3 when -4 arrives.
	sd.WaitFor(from, 10*time.Second, func(fl reportertest.Flushes) bool {
		v, ok := fl.Gauge("app.queue.depth.value")
		return ok && v == 3 && fl.Counter("app.jobs.done.total") == 5
	})

	c.Add(2)
	g.Set(-4)
	m.Mark(1)
	tm.Update(40 * time.Millisecond)
	if err := rep.Report(ctx); err != nil {
		t.Fatal(err)
	}
	c.Add(-3) // a counter going down sends a negative change
	if err := rep.Report(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rep.Report(ctx); err != nil { // nothing changed: no increments
		t.Fatal(err)
	}
	if err := rep.Close(); err != nil { // sends the buffer
		t.Fatal(err)
	}

	fl := sd.WaitFor(from, 10*time.Second, func(fl reportertest.Flushes) bool {
		v, _ := fl.Gauge("app.queue.depth.value")
		return v == -4 && len(fl.Timer("app.db.query")) == 4 && fl.Counter("app.jobs.done.total") == 4
	})
	// A couple more flushes: nothing may be added later.
	n := len(fl)
	fl = sd.WaitFor(from, 10*time.Second, func(fl reportertest.Flushes) bool { return len(fl) >= n+3 })

	// Deltas: 5, +2, -3 sum to the counter's value 4. tapes would have
	// sent 5 + 7 + 4 + 4 = 20.
	if got := fl.Counter("app.jobs.done.total"); got != 4 {
		t.Errorf("app.jobs.done.total summed to %v in StatsD, want 4", got)
	}
	if got := fl.Counter("app.api.calls.total"); got != 5 {
		t.Errorf("app.api.calls.total = %v, want 5", got)
	}
	if got := fl.Counter("app.tapes.host.shm.dropped.total"); got != 7 {
		t.Errorf("app.tapes.host.shm.dropped.total = %v, want 7", got)
	}
	// The timer's durations themselves, in ms, each within 0.54% of its bucket's
	// middle (registry.RelativeError), and StatsD counted each once.
	durs := fl.Timer("app.db.query")
	slices.Sort(durs)
	if len(durs) != 4 {
		t.Errorf("StatsD got durations %v for app.db.query, want 4", durs)
	} else {
		for i, want := range []float64{10, 20, 30, 40} {
			if !near(durs[i], want, registry.RelativeError) {
				t.Errorf("duration %d = %v ms, want %v", i, durs[i], want)
			}
		}
	}
	if got := timerCount(fl, "app.db.query"); got != 4 {
		t.Errorf("StatsD's count of app.db.query = %v, want 4", got)
	}
	if got := fl.Counter("app.payload.size.total"); got != 2 {
		t.Errorf("app.payload.size.total = %v, want 2", got)
	}
	gauges := map[string]float64{
		"app.queue.depth.value": -4, // not 3-4 = -1: sent as 0 then -4
		"app.level.value":       2,
		"app.payload.size.max":  200,
		"app.payload.size.min":  100,
		"app.payload.size.mean": 150,
	}
	for name, want := range gauges {
		got, ok := fl.Gauge(name)
		if !ok || !near(got, want, 0.03) {
			t.Errorf("gauge %s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	for _, name := range []string{"app.api.calls.m1_rate", "app.api.calls.m5_rate", "app.api.calls.m15_rate",
		"app.api.calls.mean_rate", "app.db.query.m1_rate", "app.payload.size.q50"} {
		if v, ok := fl.Gauge(name); !ok || v < 0 {
			t.Errorf("gauge %s = %v (present %v)", name, v, ok)
		}
	}
	if v, _ := fl.Gauge("app.api.calls.m1_rate"); v <= 0 {
		t.Errorf("app.api.calls.m1_rate = %v after a tick with events, want > 0", v)
	}

	// Exactly the documented names, with the documented types.
	want := map[string]string{
		"app.jobs.done.total": "counter", "app.api.calls.total": "counter",
		"app.db.query": "timer", "app.payload.size.total": "counter",
		"app.queue.depth.value": "gauge", "app.tapes.host.shm.dropped.total": "counter",
		"app.level.value": "gauge",
	}
	for _, base := range []string{"app.api.calls", "app.db.query", "app.idle.timer"} {
		for _, k := range []string{"m1_rate", "m5_rate", "m15_rate", "mean_rate"} {
			want[base+"."+k] = "gauge"
		}
	}
	for _, base := range []string{"app.payload.size"} {
		for _, k := range append([]string{"min", "max", "mean", "stddev"}, registry.QuantileKeys[:]...) {
			want[base+"."+k] = "gauge"
		}
	}
	got := fl.Names()
	for name, typ := range got {
		if strings.HasPrefix(name, "statsd.") || name == reportertest.ProbeCounter {
			continue
		}
		if want[name] != typ {
			t.Errorf("StatsD got %s %q, which is not expected (want type %q)", typ, name, want[name])
		}
	}
	for name, typ := range want {
		if got[name] != typ {
			t.Errorf("StatsD never got %s %q", typ, name)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRecoversWhenStatsDComesBack(t *testing.T) {
	sd := reportertest.StartStatsD(t)
	r := registry.New()
	c := r.Counter("up.c")
	g := r.Gauge("up.g", nil)
	c.Add(1)
	g.Set(1)
	rep, err := New(sd.Addr, r, Options{FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	var logs lockedBuffer
	sched := reporters.Start(context.Background(), rep, 30*time.Millisecond,
		reporters.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	defer sched.Stop()

	sd.WaitFor(0, 10*time.Second, func(fl reportertest.Flushes) bool {
		v, _ := fl.Gauge("up.g.value")
		return v == 1 && fl.Counter("up.c.total") == 1
	})

	sd.Stop()
	deadline := time.Now().Add(15 * time.Second)
	for sched.Errors() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no failed report within 15s of StatsD stopping; SendErrors=%d", rep.SendErrors())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rep.SendErrors() == 0 {
		t.Fatal("a report failed but SendErrors is 0")
	}

	mark := len(sd.Flushes())
	sd.Restart() // same port
	g.Set(2)
	c.Add(100)
	fl := sd.WaitFor(mark, 15*time.Second, func(fl reportertest.Flushes) bool {
		v, _ := fl.Gauge("up.g.value")
		return v == 2 && fl.Counter("up.c.total") >= 100
	})
	if got := fl.Counter("up.c.total"); got != 100 {
		t.Errorf("after the restart StatsD got %v for up.c.total, want the change 100", got)
	}
	sched.Stop()
	out := logs.String()
	if !strings.Contains(out, "reporter failed") || !strings.Contains(out, "reporter recovered") {
		t.Errorf("outage and recovery not logged:\n%s", out)
	}
}

func TestNewRejectsBadConfiguration(t *testing.T) {
	r := registry.New()
	if _, err := New("no-port", r, Options{}); err == nil {
		t.Error("New accepted an address without a port")
	}
	if _, err := New("127.0.0.1:8125", r, Options{Prefix: "bad prefix"}); err == nil {
		t.Error("New accepted an invalid prefix")
	}
	if _, err := New("127.0.0.1:8125", nil, Options{}); err == nil {
		t.Error("New accepted a nil registry")
	}
	rep, err := New("127.0.0.1:8125", r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rep.Close()
	if err := rep.Report(context.Background()); err == nil {
		t.Error("Report after Close succeeded")
	}
}

func TestUnresolvableHostFailsReportsNotNew(t *testing.T) {
	rep, err := New("no-such-host.invalid:8125", registry.New(), Options{})
	if err != nil {
		t.Fatalf("New must not resolve the host: %v", err)
	}
	defer rep.Close()
	if err := rep.Report(context.Background()); err == nil {
		t.Fatal("Report to an unresolvable host succeeded")
	}
}

// timerCount is StatsD's count of timer name over the flushes: the sum of
// 1/rate over its samples.
func timerCount(fl reportertest.Flushes, name string) float64 {
	var n float64
	for _, f := range fl {
		if raw, ok := f.TimerData[name]["count"]; ok {
			var c float64
			if err := json.Unmarshal(raw, &c); err == nil {
				n += c
			}
		}
	}
	return n
}

// More durations than TimerSamples in one report: StatsD still counts each
// one, and the samples it gets are the durations' quantiles.
func TestTimerSamplesInRealStatsD(t *testing.T) {
	sd := reportertest.StartStatsD(t)
	r := registry.New()
	tm := r.Timer("rpc")
	for i := 1; i <= 1000; i++ {
		tm.Update(time.Duration(i) * time.Millisecond)
	}
	rep, err := New(sd.Addr, r, Options{FlushInterval: 10 * time.Millisecond, TimerSamples: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	from := len(sd.Flushes())
	if err := rep.Report(context.Background()); err != nil {
		t.Fatal(err)
	}
	fl := sd.WaitFor(from, 10*time.Second, func(fl reportertest.Flushes) bool { return len(fl.Timer("rpc")) >= 50 })
	// Group g of 20 durations (g*20+1 .. g*20+20 ms) sends its middle one,
	// rank g*20+9 from 0: g*20+10 ms.
	got := fl.Timer("rpc")
	slices.Sort(got)
	if len(got) != 50 {
		t.Fatalf("%d samples, want 50", len(got))
	}
	for g, v := range got {
		if want := float64(g*20 + 10); !near(v, want, registry.RelativeError) {
			t.Errorf("sample %d = %v ms, want %v", g, v, want)
		}
	}
	if c := timerCount(fl, "rpc"); !near(c, 1000, 1e-9) {
		t.Errorf("StatsD counted %v durations, want 1000", c)
	}

	// The next report sends only what came since: 75 durations of 5 s,
	// in 38 samples (37 standing for 2, the last for 1).
	for range 75 {
		tm.Update(5 * time.Second)
	}
	n := len(sd.Flushes())
	if err := rep.Report(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := rep.Report(context.Background()); err != nil { // nothing new: nothing sent
		t.Fatal(err)
	}
	rep.Close()
	fl = sd.WaitFor(n, 10*time.Second, func(fl reportertest.Flushes) bool { return len(fl.Timer("rpc")) >= 38 })
	fl = sd.WaitFor(n, 10*time.Second, func(f reportertest.Flushes) bool { return len(f) >= len(fl)+3 })
	got = fl.Timer("rpc")
	if len(got) != 38 {
		t.Errorf("%d samples after the second report, want 38", len(got))
	}
	for _, v := range got {
		if !near(v, 5000, registry.RelativeError) {
			t.Errorf("sample %v ms, want 5000", v)
		}
	}
	if c := timerCount(fl, "rpc"); !near(c, 75, 1e-9) {
		t.Errorf("StatsD counted %v durations, want 75", c)
	}
}

// statsd_exporter repeats a timer sample int(1/rate) times
// (pkg/line/line.go); the rate written for a weight must give it back.
func TestSampleRateGivesWeightBack(t *testing.T) {
	for w := uint64(2); w < 200000; w++ {
		s := formatSample(1.5, w)
		i := strings.Index(s, "|@")
		if i < 0 || s[:i] != "1.5|ms" {
			t.Fatalf("weight %d: %q", w, s)
		}
		rate, err := strconv.ParseFloat(s[i+2:], 64)
		if err != nil || strings.ContainsAny(s[i+2:], "eE") {
			t.Fatalf("weight %d: rate %q: %v", w, s[i+2:], err)
		}
		if int(1/rate) != int(w) || 1/rate-float64(w) > 1e-6 {
			t.Fatalf("weight %d: rate %q reads as %v values", w, s[i+2:], 1/rate)
		}
	}
	if s := formatSample(0.000123456789, 1); s != "0.000123457|ms" {
		t.Errorf("formatSample = %q", s)
	}
}

// The difference of cumulative buckets across a schema change (the
// registry halves its resolution when a histogram passes its bucket cap)
// counts only the new values.
func TestDiffAcrossSchemaChange(t *testing.T) {
	prev := &timerState{schema: 6, pos: []bucket{{1, 2}, {2, 3}, {3, 1}, {8, 4}}}
	// At schema 5 bucket j holds schema-6 buckets 2j-1 and 2j: 1,2 -> 1;
	// 3 -> 2; 8 -> 4. New: 1 in bucket 1, 5 in bucket 3, 2 in bucket 4.
	cur := &registry.NativeHistogram{Schema: 5,
		PositiveSpans:  []registry.BucketSpan{{Offset: 1, Length: 4}},
		PositiveCounts: []uint64{6, 1, 5, 6},
	}
	got := diff(nil, cur, prev)
	want := []bucket{{1, 1}, {3, 5}, {4, 2}}
	if !slices.Equal(got, want) {
		t.Errorf("diff = %v, want %v", got, want)
	}
	// Spans with gaps, same schema.
	prev = &timerState{schema: 6, pos: []bucket{{-3, 1}, {10, 2}}}
	cur = &registry.NativeHistogram{Schema: 6,
		PositiveSpans:  []registry.BucketSpan{{Offset: -3, Length: 1}, {Offset: 2, Length: 2}, {Offset: 8, Length: 1}},
		PositiveCounts: []uint64{1, 4, 1, 3},
	}
	got = diff(nil, cur, prev)
	want = []bucket{{0, 4}, {1, 1}, {10, 1}}
	if !slices.Equal(got, want) {
		t.Errorf("diff = %v, want %v", got, want)
	}
}
