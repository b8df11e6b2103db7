package statsd

import (
	"bytes"
	"context"
	"log/slog"
	"math"
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
		return v == -4 && fl.Counter("app.db.query.total") == 4 && fl.Counter("app.jobs.done.total") == 4
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
	if got := fl.Counter("app.db.query.total"); got != 4 {
		t.Errorf("app.db.query.total = %v, want 4", got)
	}
	if got := fl.Counter("app.payload.size.total"); got != 2 {
		t.Errorf("app.payload.size.total = %v, want 2", got)
	}
	gauges := map[string]float64{
		"app.queue.depth.value": -4, // not 3-4 = -1: sent as 0 then -4
		"app.db.query.max":      40, // milliseconds
		"app.db.query.min":      10,
		"app.db.query.mean":     25,
		"app.db.query.q999":     40,
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
	if q, _ := fl.Gauge("app.db.query.q50"); q < 19 || q > 31 {
		t.Errorf("app.db.query.q50 = %v ms, want between 20 and 30", q)
	}
	for _, name := range []string{"app.api.calls.m1_rate", "app.api.calls.m5_rate", "app.api.calls.m15_rate",
		"app.api.calls.mean_rate", "app.db.query.m1_rate", "app.db.query.stddev", "app.db.query.q75",
		"app.db.query.q95", "app.db.query.q98", "app.db.query.q99", "app.payload.size.q50"} {
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
		"app.db.query.total": "counter", "app.payload.size.total": "counter",
		"app.idle.timer.total": "counter", "app.queue.depth.value": "gauge",
	}
	for _, base := range []string{"app.api.calls", "app.db.query", "app.idle.timer"} {
		for _, k := range []string{"m1_rate", "m5_rate", "m15_rate", "mean_rate"} {
			want[base+"."+k] = "gauge"
		}
	}
	for _, base := range []string{"app.db.query", "app.payload.size"} {
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
