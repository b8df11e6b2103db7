package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestCounterIncDec(t *testing.T) {
	r := New()
	c := r.Counter("my.counter")
	if c.Value() != 0 {
		t.Fatalf("new counter = %d", c.Value())
	}
	c.Inc()
	c.Inc()
	c.Dec()
	c.Add(10)
	c.Add(-3)
	if c.Value() != 8 {
		t.Fatalf("value = %d, want 8", c.Value())
	}
	var zero Counter
	zero.Dec()
	if zero.Value() != -1 {
		t.Fatalf("zero counter after Dec = %d", zero.Value())
	}
}

func TestGaugeProducerCalledOnEachRead(t *testing.T) {
	r := New()
	calls := 0
	g := r.Gauge("my.gauge", func() float64 { calls++; return float64(calls) * 1.5 })
	if v := g.Value(); v != 1.5 {
		t.Fatalf("first read = %v", v)
	}
	if v := g.Value(); v != 3 {
		t.Fatalf("second read = %v", v)
	}
	st := r.Stats()["my"].(map[string]any)["gauge"].(map[string]any)
	if st["value"] != 4.5 || calls != 3 {
		t.Fatalf("Stats read %v after %d calls", st, calls)
	}
	g.Set(100) // the function wins, as in tapes
	if v := g.Value(); v != 6 {
		t.Fatalf("read after Set = %v", v)
	}

	s := r.Gauge("my.settable", nil)
	s.Set(2.25)
	if s.Value() != 2.25 {
		t.Fatalf("settable gauge = %v", s.Value())
	}
	// An existing gauge is returned as it is: the first fn stays.
	if g2 := r.Gauge("my.gauge", func() float64 { return -1 }); g2 != g || g2.Value() == -1 {
		t.Fatal("second Gauge call replaced the first producer")
	}
}

func TestSameNameSameInstance(t *testing.T) {
	r := New()
	if r.Counter("a.c") != r.Counter("a.c") {
		t.Error("counter")
	}
	if r.Meter("a.m") != r.Meter("a.m") {
		t.Error("meter")
	}
	if r.Timer("a.t") != r.Timer("a.t") {
		t.Error("timer")
	}
	if r.Histogram("a.h") != r.Histogram("a.h") {
		t.Error("histogram")
	}
	if r.Gauge("a.g", nil) != r.Gauge("a.g", func() float64 { return 1 }) {
		t.Error("gauge")
	}
	m, err := r.GetOrCreate(KindTimer, "a.t")
	if err != nil || m != r.Timer("a.t") {
		t.Errorf("GetOrCreate gave %v, %v", m, err)
	}
	if got, ok := r.Get("a.h"); !ok || got != r.Histogram("a.h") {
		t.Error("Get")
	}
	if _, ok := r.Get("a.nothing"); ok {
		t.Error("Get of a missing name")
	}
	if r.Len() != 5 {
		t.Errorf("Len = %d", r.Len())
	}
}

func TestRegistriesIndependent(t *testing.T) {
	a, b := New(), New()
	a.Counter("x.c").Add(5)
	if b.Counter("x.c") == a.Counter("x.c") || b.Counter("x.c").Value() != 0 {
		t.Fatal("registries share a counter")
	}
	a.Meter("only.in.a")
	if _, err := b.GetOrCreate(KindTimer, "only.in.a"); err != nil {
		t.Fatalf("a's name blocked b: %v", err)
	}
	if a.Len() != 2 || b.Len() != 2 {
		t.Fatalf("Len %d %d", a.Len(), b.Len())
	}
}

func TestInvalidNames(t *testing.T) {
	r := New()
	for _, name := range []string{"", ".a", "a.", "a..b", "a b", "a/b", "é", "a.b\n", strings.Repeat("a", 256)} {
		m, err := r.GetOrCreate(KindCounter, name)
		if m != nil || !errors.Is(err, ErrInvalidName) {
			t.Errorf("%q: got %v, %v", name, m, err)
			continue
		}
		var ne *NameError
		if !errors.As(err, &ne) || ne.Name != name || ne.Kind != KindCounter {
			t.Errorf("%q: error %#v", name, err)
		}
		if msg := mustPanic(t, func() { r.Counter(name) }); !strings.Contains(msg, "invalid metric name") {
			t.Errorf("%q: panic %q", name, msg)
		}
	}
	long := strings.Repeat("a", 255)
	if _, err := r.GetOrCreate(KindCounter, long); err != nil {
		t.Errorf("255-byte name: %v", err)
	}
	if _, err := r.GetOrCreate(KindCounter, strings.Repeat("b.", 127)+"c"); err != nil {
		t.Errorf("255-byte dotted name: %v", err)
	}
	if r.Len() != 2 {
		t.Errorf("rejected names were registered: Len = %d", r.Len())
	}
}

func TestKindConflict(t *testing.T) {
	r := New()
	r.Timer("svc.latency")
	kinds := []Kind{KindCounter, KindGauge, KindMeter, KindHistogram}
	for _, k := range kinds {
		m, err := r.GetOrCreate(k, "svc.latency")
		if m != nil || !errors.Is(err, ErrKindConflict) {
			t.Fatalf("%v: %v, %v", k, m, err)
		}
		var ne *NameError
		if !errors.As(err, &ne) || ne.Name != "svc.latency" || ne.Kind != k || ne.Existing != KindTimer {
			t.Fatalf("%v: %#v", k, err)
		}
		if !strings.Contains(err.Error(), "timer") || !strings.Contains(err.Error(), k.String()) {
			t.Errorf("message %q does not name both kinds", err)
		}
	}
	for name, f := range map[string]func(){
		"counter":   func() { r.Counter("svc.latency") },
		"meter":     func() { r.Meter("svc.latency") },
		"histogram": func() { r.Histogram("svc.latency") },
		"gauge":     func() { r.Gauge("svc.latency", nil) },
	} {
		msg := mustPanic(t, f)
		if !strings.Contains(msg, `"svc.latency"`) || !strings.Contains(msg, "registered as a timer") || !strings.Contains(msg, name) {
			t.Errorf("%s: panic message %q", name, msg)
		}
	}
	if _, err := r.GaugeFunc("svc.latency", nil); !errors.Is(err, ErrKindConflict) {
		t.Errorf("GaugeFunc: %v", err)
	}
	if _, err := r.GetOrCreate(Kind(0), "svc.other"); !errors.Is(err, ErrInvalidKind) {
		t.Errorf("kind 0: %v", err)
	}
	if _, err := r.GetOrCreate(Kind(9), "svc.other"); !errors.Is(err, ErrInvalidKind) {
		t.Errorf("kind 9: %v", err)
	}
}

func TestPrefixConflict(t *testing.T) {
	r := New()
	r.Counter("a.b")
	// A new name below an existing metric.
	_, err := r.GetOrCreate(KindCounter, "a.b.c")
	var ne *NameError
	if !errors.Is(err, ErrPrefixConflict) || !errors.As(err, &ne) || ne.Name != "a.b.c" || ne.Other != "a.b" {
		t.Fatalf("a.b.c beside a.b: %#v", err)
	}
	// A new name above existing metrics.
	r.Timer("x.y.z.w")
	_, err = r.GetOrCreate(KindMeter, "x.y")
	if !errors.Is(err, ErrPrefixConflict) || !errors.As(err, &ne) || ne.Name != "x.y" || ne.Other != "x.y.z.w" {
		t.Fatalf("x.y above x.y.z.w: %#v", err)
	}
	msg := mustPanic(t, func() { r.Histogram("x.y.z") })
	if !strings.Contains(msg, `"x.y.z"`) || !strings.Contains(msg, `"x.y.z.w"`) {
		t.Errorf("panic message %q", msg)
	}
	// Neighbours that only share a string prefix are fine.
	for _, name := range []string{"a.bc", "a.c", "x.yz", "x.y.zz"} {
		if _, err := r.GetOrCreate(KindCounter, name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Unregister frees the path.
	if !r.Unregister("x.y.z.w") || r.Unregister("x.y.z.w") {
		t.Fatal("Unregister")
	}
	if _, err := r.GetOrCreate(KindMeter, "x.y.z"); err != nil {
		t.Fatalf("after Unregister: %v", err)
	}
}

func TestMaxMetrics(t *testing.T) {
	r := New(WithMaxMetrics(2))
	r.Counter("m.one")
	r.Meter("m.two")
	_, err := r.GetOrCreate(KindTimer, "m.three")
	var ne *NameError
	if !errors.Is(err, ErrTooManyMetrics) || !errors.As(err, &ne) || ne.Name != "m.three" {
		t.Fatalf("third metric: %v", err)
	}
	if msg := mustPanic(t, func() { r.Histogram("m.four") }); !strings.Contains(msg, "limit") {
		t.Errorf("panic %q", msg)
	}
	if r.Counter("m.one") == nil { // existing names still resolve at the limit
		t.Fatal("existing name")
	}
	r.Unregister("m.one")
	if _, err := r.GetOrCreate(KindTimer, "m.three"); err != nil {
		t.Fatalf("after Unregister: %v", err)
	}
}

func TestEachInNameOrder(t *testing.T) {
	r := New()
	names := []string{"z.a", "a.z", "m.m.m", "a.a", "b"}
	for _, n := range names {
		r.Counter(n)
	}
	var got []string
	r.Each(func(name string, m Metric) {
		got = append(got, name)
		r.Counter("late." + name) // creating inside Each must not deadlock
	})
	sort.Strings(names)
	if !reflect.DeepEqual(got, names) {
		t.Fatalf("Each order %v", got)
	}
	if r.Len() != 10 {
		t.Fatalf("Len %d", r.Len())
	}
}

var (
	meterKeys     = []string{"count", "m1", "m5", "m15", "mean_rate"}
	histogramKeys = []string{"count", "min", "max", "mean", "stddev", "q50", "q75", "q95", "q98", "q99", "q999"}
)

func keys(m map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	sort.Strings(k)
	return k
}

func sorted(s ...[]string) []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range s {
		for _, k := range l {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

func TestStatsKeysAndEmptyZero(t *testing.T) {
	r := New(WithClock(newFakeClock()))
	r.Counter("k.counter")
	r.Gauge("k.gauge", nil)
	r.Meter("k.meter")
	r.Histogram("k.histogram")
	r.Timer("k.timer")
	k := r.Stats()["k"].(map[string]any)
	want := map[string][]string{
		"counter":   {"value"},
		"gauge":     {"value"},
		"meter":     sorted(meterKeys),
		"histogram": sorted(histogramKeys),
		"timer":     sorted(meterKeys, histogramKeys),
	}
	if len(k) != len(want) {
		t.Fatalf("tree %v", k)
	}
	for name, wk := range want {
		leaf := k[name].(map[string]any)
		if got := keys(leaf); !reflect.DeepEqual(got, wk) {
			t.Errorf("%s keys %v, want %v", name, got, wk)
		}
		for key, v := range leaf {
			var f float64
			switch v := v.(type) {
			case int64:
				f = float64(v)
			case uint64:
				f = float64(v)
			case float64:
				f = v
			default:
				t.Errorf("%s.%s has type %T", name, key, v)
			}
			if f != 0 {
				t.Errorf("empty %s.%s = %v", name, key, v)
			}
		}
	}
}

func TestStatsJSONShape(t *testing.T) {
	clk := newFakeClock()
	r := New(WithClock(clk))
	r.Timer("my.timer").Update(250 * time.Millisecond)
	r.Counter("my.http.requests").Add(3)
	r.Gauge("my.http.inflight", func() float64 { return 2 })
	r.Histogram("other").Update(7)
	b, err := json.Marshal(r.Stats())
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]map[string]any
	if err := json.Unmarshal(b, &tree); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	timer := tree["my"]["timer"].(map[string]any)
	if got := keys(timer); !reflect.DeepEqual(got, sorted(meterKeys, histogramKeys)) {
		t.Fatalf("timer keys %v", got)
	}
	if timer["count"] != 1.0 || timer["max"] != 0.25 || timer["q50"] != 0.25 {
		t.Errorf("timer leaf %v", timer)
	}
	http := tree["my"]["http"].(map[string]any)
	if http["requests"].(map[string]any)["value"] != 3.0 || http["inflight"].(map[string]any)["value"] != 2.0 {
		t.Errorf("http subtree %v", http)
	}
	if tree["other"]["count"] != 1.0 || tree["other"]["mean"] != 7.0 {
		t.Errorf("other %v", tree["other"])
	}
	if !strings.HasPrefix(string(b), `{"my":{"http":{"inflight":{"value":2},"requests":{"value":3}},"timer":{"count":1,`) {
		t.Errorf("json %s", b)
	}
}

type UsersHandler struct {
	Latency  *Timer     `tapes:"http.{}.latency"`
	Errors   *Counter   `tapes:"http.{}.errors"`
	Rate     *Meter     `tapes:"http.{}.rate"`
	Sizes    *Histogram `tapes:"http.{}.sizes"`
	Inflight *Gauge     `tapes:"http.{}.inflight"`
	Other    int
	Untagged *Counter
}

type OrdersHandler struct {
	Latency *Timer `tapes:"http.{}.latency"`
}

func TestBind(t *testing.T) {
	r := New()
	u := &UsersHandler{}
	if err := r.Bind(u); err != nil {
		t.Fatal(err)
	}
	if u.Latency != r.Timer("http.UsersHandler.latency") || u.Errors != r.Counter("http.UsersHandler.errors") ||
		u.Rate != r.Meter("http.UsersHandler.rate") || u.Sizes != r.Histogram("http.UsersHandler.sizes") ||
		u.Inflight != r.Gauge("http.UsersHandler.inflight", nil) || u.Untagged != nil {
		t.Fatalf("bound %+v", u)
	}
	o := &OrdersHandler{}
	if err := r.Bind(o); err != nil {
		t.Fatal(err)
	}
	if o.Latency == u.Latency || o.Latency != r.Timer("http.OrdersHandler.latency") {
		t.Fatal("types share a timer")
	}
	u2 := &UsersHandler{}
	if err := r.Bind(u2); err != nil || u2.Latency != u.Latency {
		t.Fatal("second instance of a type got other metrics")
	}
}

func TestBindErrors(t *testing.T) {
	r := New()
	r.Counter("bad.Conflict.t")
	type Conflict struct {
		A *Timer `tapes:"bad.{}.a"`
		T *Timer `tapes:"bad.{}.t"`
	}
	type WrongType struct {
		A *Timer `tapes:"bad.{}.a"`
		N int    `tapes:"bad.{}.n"`
	}
	type Unexported struct {
		a *Timer `tapes:"bad.{}.a"`
	}
	type BadName struct {
		A *Timer `tapes:"bad.{}.a b"`
	}
	var n int
	cases := []struct {
		ptr  any
		want string
		is   error
	}{
		{nil, "pointer to a struct", nil},
		{UsersHandler{}, "pointer to a struct", nil},
		{(*UsersHandler)(nil), "pointer to a struct", nil},
		{&n, "pointer to a struct", nil},
		{&Conflict{}, "Conflict.T", ErrKindConflict},
		{&WrongType{}, "WrongType.N has type int", nil},
		{&Unexported{}, "not exported", nil},
		{&BadName{}, "BadName.A", ErrInvalidName},
	}
	for _, c := range cases {
		err := r.Bind(c.ptr)
		if err == nil || !strings.Contains(err.Error(), c.want) || (c.is != nil && !errors.Is(err, c.is)) {
			t.Errorf("Bind(%T): %v, want %q", c.ptr, err, c.want)
		}
	}
	cf := &Conflict{}
	r.Bind(cf)
	if cf.A != nil {
		t.Error("a failed Bind filled a field")
	}
	if _, ok := r.Get("bad.WrongType.a"); ok {
		t.Error("a failed Bind created a metric for a type error")
	}
	// A name rejected after valid ones leaves none of them behind.
	for _, ptr := range []any{&Conflict{}, &struct {
		A *Counter `tapes:"late.a"`
		B *Counter `tapes:"late..b"`
	}{}, &struct {
		A *Counter `tapes:"own.a"`
		B *Timer   `tapes:"own.a.b"` // a prefix conflict between two fields
	}{}} {
		if err := r.Bind(ptr); err == nil {
			t.Fatalf("Bind(%T) succeeded", ptr)
		}
	}
	for _, name := range []string{"bad.Conflict.a", "late.a", "own.a"} {
		if _, ok := r.Get(name); ok {
			t.Errorf("a failed Bind created %s", name)
		}
	}
}

type Pair[K comparable, V any] struct {
	Hits *Counter `tapes:"gen.{}.hits"`
}

// TestBindGeneric: "{}" of a generic type is its name without type
// arguments, which would make an invalid name.
func TestBindGeneric(t *testing.T) {
	r := New()
	p := &Pair[int, string]{}
	if err := r.Bind(p); err != nil || p.Hits == nil {
		t.Fatalf("Bind: %v", err)
	}
	if _, ok := r.Get("gen.Pair.hits"); !ok {
		t.Error("gen.Pair.hits not created")
	}
}

func TestNameErrorMessages(t *testing.T) {
	for _, e := range []*NameError{
		{Name: "a", Kind: KindCounter, Existing: KindMeter, Err: ErrKindConflict},
		{Name: "a.b", Kind: KindTimer, Other: "a", Err: ErrPrefixConflict},
		{Name: "a", Kind: KindGauge, Err: ErrTooManyMetrics},
	} {
		if !strings.HasPrefix(e.Error(), "tapes: ") || !strings.Contains(e.Error(), fmt.Sprintf("%q", e.Name)) {
			t.Errorf("%q", e.Error())
		}
		if !errors.Is(e, e.Err) {
			t.Errorf("%v does not unwrap", e)
		}
	}
}

// TestTenThousandTimers: creating many metrics is linear, Each still visits
// them in name order after creations and removals, and 10,000 timers that
// each recorded a value fit in a few MB.
func TestTenThousandTimers(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const n = 10_000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("svc.e%d.latency", (i*7919)%n) // not in order
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := New()
	for _, name := range names {
		r.Timer(name).Update(time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := int(after.HeapAlloc-before.HeapAlloc) / n
	if per > 3000 {
		t.Errorf("%d bytes per timer", per)
	}
	t.Logf("%d bytes per timer with one value", per)
	for i := 0; i < n; i += 3 {
		r.Unregister(names[i])
	}
	var got []string
	r.Each(func(name string, m Metric) { got = append(got, name) })
	if len(got) != r.Len() || r.Len() != n-(n+2)/3 || !sort.StringsAreSorted(got) {
		t.Fatalf("Each visited %d (Len %d), sorted %v", len(got), r.Len(), sort.StringsAreSorted(got))
	}
	runtime.KeepAlive(r)
}

func TestRecordPathsDoNotAllocate(t *testing.T) {
	r := New()
	c, g, m, tm, h := r.Counter("a.c"), r.Gauge("a.g", nil), r.Meter("a.m"), r.Timer("a.t"), r.Histogram("a.h")
	i := 0
	paths := map[string]func(){
		"Counter.Inc":      c.Inc,
		"Counter.Add":      func() { c.Add(3) },
		"Gauge.Set":        func() { g.Set(1.5) },
		"Meter.Mark":       func() { m.Mark(1) },
		"Timer.Update":     func() { i++; tm.Update(time.Duration(i%4096) * time.Microsecond) },
		"Timer.Time.Stop":  func() { tm.Time().Stop() },
		"Timer.Func":       func() { tm.Func(func() {}) },
		"Histogram.Update": func() { i++; h.Update(float64(i % 4096)) },
	}
	for name, f := range paths {
		for range 5000 { // let bucket arrays reach their range first
			f()
		}
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s allocates %v times per call", name, n)
		}
	}
}
