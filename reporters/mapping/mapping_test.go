package mapping

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/tapes-go/tapes/wire"
)

func load(t *testing.T, path string) *Mapper {
	t.Helper()
	m, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var allKinds = []wire.Kind{wire.KindCounter, wire.KindGauge, wire.KindMeter, wire.KindTimer, wire.KindHistogram}

func TestFleetFile(t *testing.T) {
	m := load(t, "testdata/fleet.yml")
	buckets := []float64{0.005, 0.01, 0.05, 0.1, 0.5, 1}
	cases := []struct {
		name string
		kind wire.Kind
		want Result
		ok   bool
	}{
		// The example: a timer gets its route as a label.
		{"fleet.index.latency", wire.KindTimer, Result{Name: "fleet_latency", Labels: []Label{{"route", "index"}},
			Help: "Request latency per route.", Observer: ObserverHistogram, Buckets: buckets}, true},
		{"fleet.login.latency", wire.KindHistogram, Result{Name: "fleet_latency", Labels: []Label{{"route", "login"}},
			Help: "Request latency per route.", Observer: ObserverHistogram, Buckets: buckets}, true},
		// Observer options are for timers and histograms only.
		{"fleet.index.latency", wire.KindCounter, Result{Name: "fleet_latency", Labels: []Label{{"route", "index"}},
			Help: "Request latency per route."}, true},
		{"fleet.index.latency.p99", wire.KindTimer, Result{}, false}, // a glob * is one segment
		{"fleet.latency", wire.KindTimer, Result{}, false},
		// Two captures, sorted labels; a '-' in the name is escaped to '_'.
		{"svc.api.200.calls", wire.KindMeter, Result{Name: "svc_200_calls", Labels: []Label{{"code", "200"}, {"service", "api"}}}, true},
		{"svc.api.x-y.calls", wire.KindCounter, Result{Name: "svc_x_y_calls", Labels: []Label{{"code", "x-y"}, {"service", "api"}}}, true},
		// match_metric_type: gauge.
		{"queue.mail.depth", wire.KindGauge, Result{Name: "queue_depth", Labels: []Label{{"queue", "mail"}}}, true},
		{"queue.mail.depth", wire.KindCounter, Result{}, false},
		{"queue.mail.depth", wire.KindTimer, Result{}, false},
		// observer_type: summary with its own quantiles, sorted.
		{"jobs.backup.latency", wire.KindTimer, Result{Name: "job_latency", Labels: []Label{{"job", "backup"}},
			Observer: ObserverSummary, Quantiles: []float64{0.5, 0.99}}, true},
		// action: drop, for every kind.
		{"debug.a.b", wire.KindCounter, Result{Drop: true}, true},
		{"debug.a.b", wire.KindTimer, Result{Drop: true}, true},
		{"debug.a", wire.KindCounter, Result{}, false},
		// A leading digit gets a '_' before it, as in statsd_exporter.
		{"shard.0.size", wire.KindGauge, Result{Name: "_0_size"}, true},
		// Regex with two captures; "le" is fine for a counter.
		{"db.users.read.bytes", wire.KindCounter, Result{Name: "db_bytes",
			Labels: []Label{{"db", "users"}, {"le", "read"}, {"op", "read"}}}, true},
		{"db.users.scan.bytes", wire.KindCounter, Result{}, false},
		{"unmapped.name", wire.KindCounter, Result{}, false},
		{"fleet.index.latency", wire.KindInvalid, Result{}, false},
		{"fleet.index.latency", wire.Kind(9), Result{}, false},
	}
	for _, c := range cases {
		for range 2 { // the second call is answered by the cache
			got, ok := m.Map(c.name, c.kind)
			if ok != c.ok || !reflect.DeepEqual(got, c.want) {
				t.Errorf("Map(%q, %v) = %+v, %v; want %+v, %v", c.name, c.kind, got, ok, c.want, c.ok)
			}
		}
	}

	// Matched, but not a series Prometheus takes: a per-metric error.
	errCases := []struct {
		name string
		kind wire.Kind
		want string
	}{
		{"opt.y", wire.KindGauge, `(match "^opt\\.(x)?y$"): the name is empty once its captures are expanded`},
		{"db.users.read.bytes", wire.KindHistogram, `label "le" is reserved`},
	}
	for _, c := range errCases {
		got, ok := m.Map(c.name, c.kind)
		if !ok || got.Err == nil || !strings.Contains(got.Err.Error(), c.want) {
			t.Errorf("Map(%q, %v) = %+v, %v; want an error containing %q", c.name, c.kind, got, ok, c.want)
			continue
		}
		if got.Name != "" || got.Labels != nil || got.Drop {
			t.Errorf("Map(%q, %v): an error result carries a series %+v", c.name, c.kind, got)
		}
	}
	if got, ok := m.Map("opt.xy", wire.KindGauge); !ok || got.Name != "x" || got.Err != nil {
		t.Errorf(`Map("opt.xy") = %+v, %v; want name "x"`, got, ok)
	}
}

// The slice Map returns is shared, but appending to it cannot change what
// the next caller gets.
func TestLabelsAppendSafe(t *testing.T) {
	m := load(t, "testdata/fleet.yml")
	a, _ := m.Map("fleet.index.latency", wire.KindTimer)
	_ = append(a.Labels, Label{"worker", "1"})
	b, _ := m.Map("fleet.index.latency", wire.KindTimer)
	if len(b.Labels) != 1 || cap(b.Labels) != 1 {
		t.Fatalf("labels %v (cap %d)", b.Labels, cap(b.Labels))
	}
	b.Buckets = append(b.Buckets, 99)
	c, _ := m.Map("fleet.index.latency", wire.KindTimer)
	if len(c.Buckets) != 6 {
		t.Fatalf("buckets %v", c.Buckets)
	}
}

func TestNilAndEmptyMappers(t *testing.T) {
	var m *Mapper
	if r, ok := m.Map("a.b", wire.KindCounter); ok || !reflect.DeepEqual(r, Result{}) {
		t.Errorf("nil Mapper matched: %+v", r)
	}
	for _, text := range []string{"", "mappings: []\n", "# nothing\n"} {
		m, err := Parse([]byte(text))
		if err != nil {
			t.Fatalf("Parse(%q): %v", text, err)
		}
		if r, ok := m.Map("a.b", wire.KindCounter); ok {
			t.Errorf("empty file matched: %+v", r)
		}
	}
}

// Every bad file fails to load, with an error that says what is wrong and,
// where the file's structure allows, which mapping or line.
func TestBadFiles(t *testing.T) {
	want := map[string][]string{
		"syntax.yml":           {"yaml: line 4"},
		"unknown_field.yml":    {"line 4", "field lables not found"},
		"glob.yml":             {`rule 2 (match "a..b"): invalid glob`},
		"regex.yml":            {`rule 1 (match "a.(b"): invalid regex`},
		"label_name.yml":       {`rule 1 (match "a.*"): label name "0route"`},
		"reserved_label.yml":   {`label name "__name__"`, "reserved"},
		"no_name.yml":          {`rule 1 (match "a.*"): no name`},
		"name.yml":             {`name "a.b": only [a-zA-Z0-9_]`},
		"scale.yml":            {"scale 0.001: not supported"},
		"action.yml":           {`invalid action type "keep"`},
		"metric_type.yml":      {"invalid metric type 'timer'"},
		"buckets.yml":          {"histogram_options.buckets: 2 twice"},
		"options_conflict.yml": {`rule 1 (match "a.*"): summary_options on a histogram observer`},
	}
	files, err := filepath.Glob("testdata/bad/*.yml")
	if err != nil || len(files) != len(want) {
		t.Fatalf("%d bad files (%v), %d expected", len(files), err, len(want))
	}
	for _, f := range files {
		m, err := Load(f)
		if err == nil {
			t.Errorf("%s loaded: %v", f, m)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "mapping: "+f+": ") || strings.Contains(msg, "mapping: mapping:") {
			t.Errorf("%s: error %q does not start with the file name once", f, msg)
		}
		w, ok := want[filepath.Base(f)]
		if !ok {
			t.Errorf("%s: no expectation", f)
		}
		for _, s := range w {
			if !strings.Contains(msg, s) {
				t.Errorf("%s: error %q does not contain %q", f, msg, s)
			}
		}
		b, _ := os.ReadFile(f)
		if _, err := Parse(b); err == nil || !strings.HasPrefix(err.Error(), "mapping: ") {
			t.Errorf("Parse(%s) = %v", f, err)
		}
	}
	if _, err := Load("testdata/no-such-file.yml"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Load of a missing file: %v", err)
	}
}

// Many goroutines mapping an overlapping set of names, through a cache
// small enough to evict all the time, get what a fresh mapper computes.
func TestConcurrentMapping(t *testing.T) {
	m := load(t, "testdata/fleet.yml")
	m.p.Load().m.(*matcher).max = 8
	var names []string
	for i := range 50 {
		names = append(names, fmt.Sprintf("fleet.r%d.latency", i), fmt.Sprintf("svc.s%d.%d.calls", i, i), "debug.x.y", "none.x")
	}
	want := map[string]Result{}
	wantOK := map[string]bool{}
	ref := load(t, "testdata/fleet.yml")
	for _, n := range names {
		for _, k := range allKinds {
			key := n + "/" + k.String()
			want[key], wantOK[key] = ref.Map(n, k)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				n := names[(i*7+g*13)%len(names)]
				k := allKinds[(i+g)%len(allKinds)]
				got, ok := m.Map(n, k)
				key := n + "/" + k.String()
				if ok != wantOK[key] || !reflect.DeepEqual(got, want[key]) {
					select {
					case errs <- fmt.Sprintf("%s: %+v %v, want %+v %v", key, got, ok, want[key], wantOK[key]):
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	mt := m.p.Load().m.(*matcher)
	n := 0
	for i := range mt.cache {
		mt.cache[i].Range(func(_, _ any) bool { n++; return true })
	}
	// Concurrent inserts may each pass the bound by one.
	if n > 8+8 || int64(n) != mt.n.Load() {
		t.Errorf("cache holds %d results (counted %d), bound 8", n, mt.n.Load())
	}
}

func BenchmarkMapCached(b *testing.B) {
	m, err := Load("testdata/fleet.yml")
	if err != nil {
		b.Fatal(err)
	}
	names := []string{"fleet.index.latency", "svc.api.200.calls", "unmapped.name", "db.users.read.bytes"}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Map(names[i%len(names)], wire.KindCounter)
			i++
		}
	})
}

// What the cache saves: matching a name through statsd_exporter's mapper.
func BenchmarkMapUncached(b *testing.B) {
	m, err := Load("testdata/fleet.yml")
	if err != nil {
		b.Fatal(err)
	}
	mt := m.p.Load().m.(*matcher)
	names := []string{"fleet.index.latency", "svc.api.200.calls", "unmapped.name", "db.users.read.bytes"}
	for i := 0; b.Loop(); i++ {
		mt.compute(names[i%len(names)], "counter")
	}
}

func TestReplaceSwapsWhatOutputsHold(t *testing.T) {
	a, err := Parse([]byte("mappings:\n  - match: \"a.*\"\n    name: \"a_v1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte("mappings:\n  - match: \"a.*\"\n    name: \"a_v2\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	held := &Mapper{} // what an output was given at start: matches nothing yet
	if _, ok := held.Map("a.x", wire.KindCounter); ok {
		t.Fatal("a zero Mapper matched")
	}
	for _, next := range []*Mapper{a, b} {
		held.Replace(next)
		want, _ := next.Map("a.x", wire.KindCounter)
		if got, ok := held.Map("a.x", wire.KindCounter); !ok || got.Name != want.Name {
			t.Errorf("after Replace: %q, %v; want %q", got.Name, ok, want.Name)
		}
	}
	held.Replace(nil)
	if _, ok := held.Map("a.x", wire.KindCounter); ok {
		t.Error("Replace(nil) still maps")
	}
}
