package expo

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/mapping"
	"github.com/tapes-go/tapes/wire"
)

// summary renders families as "name type {labels} value" lines, one per
// sample, so tests compare whole outputs.
func summary(fams []Family) string {
	var b strings.Builder
	for _, f := range fams {
		for _, s := range f.Samples {
			v := fmt.Sprint(s.Value)
			if f.Type == Histogram {
				v = fmt.Sprintf("n=%d native=%v", s.Snapshot.Count, s.Native != nil && s.Native.Count == s.Snapshot.Count)
			}
			fmt.Fprintf(&b, "%s %s %s %s\n", f.Name, f.Type, labelString(s.Labels), v)
		}
	}
	return b.String()
}

func collect(t *testing.T, r *registry.Registry, o Options) (string, map[string]error) {
	t.Helper()
	skips := map[string]error{}
	o.OnSkip = func(name string, err error) { skips[name] = err }
	fams, err := Collect(r, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	return summary(fams), skips
}

func TestNamesAndTypes(t *testing.T) {
	r := registry.New()
	r.Counter("jobs.active").Add(3)
	r.Counter("tapes.host.shm.dropped_total").Inc()
	r.Gauge("queue.depth_count", func() float64 { return 7 })
	r.Meter("http.requests").Mark(2)
	r.Meter("done_total").Mark(1)
	r.Timer("rpc.latency_seconds").Update(time.Millisecond)
	r.Timer("rpcCall").Update(time.Millisecond)
	r.Histogram("size").Update(10)
	got, skips := collect(t, r, Options{Namespace: "app"})
	want := `app_done_total counter  1
app_http_requests_total counter  2
app_jobs_active gauge  3
app_queue_depth_count gauge  7
app_rpc_call_seconds histogram  n=1 native=true
app_rpc_latency_seconds histogram  n=1 native=true
app_size histogram  n=1 native=true
app_tapes_host_shm_dropped_total gauge  1
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if len(skips) != 0 {
		t.Errorf("skips: %v", skips)
	}

	fams, _ := Collect(r, Options{Rates: true}, nil)
	help := map[string]string{}
	for i := range fams {
		help[fams[i].Name] = fams[i].HelpText()
	}
	for name, want := range map[string]string{
		"rpc_latency_seconds":   "rpc.latency_seconds (timer): durations in seconds",
		"rpc_latency_m5_rate":   "rpc.latency_seconds (timer), 5-minute rate, events/s",
		"http_requests_total":   "http.requests (meter): events marked",
		"http_requests_m1_rate": "http.requests (meter), 1-minute rate, events/s",
		"jobs_active":           "jobs.active (counter)",
		"size":                  "size (histogram)",
	} {
		if help[name] != want {
			t.Errorf("help of %s = %q, want %q", name, help[name], want)
		}
	}

	got, _ = collect(t, r, Options{CountersMonotonic: true, SkipNative: true})
	for _, line := range []string{"jobs_active_total counter  3\n", "tapes_host_shm_dropped_total counter  1\n", "size histogram  n=1 native=false\n"} {
		if !strings.Contains(got, line) {
			t.Errorf("missing %q in\n%s", line, got)
		}
	}
}

func TestRates(t *testing.T) {
	r := registry.New()
	r.Meter("m").Mark(1)
	r.Timer("t").Update(time.Second)
	fams, err := Collect(r, Options{Rates: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fams {
		names = append(names, f.Name+":"+f.Type.String())
	}
	want := "m_m15_rate:gauge m_m1_rate:gauge m_m5_rate:gauge m_mean_rate:gauge m_total:counter t_m15_rate:gauge t_m1_rate:gauge t_m5_rate:gauge t_mean_rate:gauge t_seconds:histogram"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestWorkerLabel(t *testing.T) {
	r := registry.New()
	r.Gauge("pool.busy.pid-12", func() float64 { return 1 })
	r.Gauge("pool.busy.pid-7", func() float64 { return 2 })
	r.Gauge("pool.busy.pid-x", func() float64 { return 3 })
	got, skips := collect(t, r, Options{})
	want := `pool_busy gauge {worker="12"} 1
pool_busy gauge {worker="7"} 2
pool_busy_pid_x gauge  3
`
	if got != want || len(skips) != 0 {
		t.Errorf("got\n%s\nwant\n%s\nskips %v", got, want, skips)
	}
}

func TestMappingMergesIntoLabels(t *testing.T) {
	m := mapping.Func(func(name string, k wire.Kind) (mapping.Result, bool) {
		p := strings.Split(name, ".")
		switch {
		case len(p) == 3 && p[0] == "fleet" && p[2] == "latency":
			return mapping.Result{Name: "fleet_latency", Labels: []mapping.Label{{Name: "route", Value: p[1]}}, Help: "Request latency."}, true
		case p[0] == "noise":
			return mapping.Result{Drop: true}, true
		case p[0] == "bad":
			return mapping.Result{Name: "9bad"}, true
		case p[0] == "failed":
			return mapping.Result{Err: errors.New("rule 3 puts le on a histogram")}, true
		case p[0] == "badlabel":
			return mapping.Result{Name: "ok", Labels: []mapping.Label{{Name: "le", Value: "1"}}}, true
		}
		return mapping.Result{}, false
	})
	r := registry.New()
	r.Timer("fleet.index.latency").Update(time.Millisecond)
	r.Timer("fleet.login.latency").Update(time.Second)
	r.Counter("noise.x").Inc()
	r.Counter("bad.x").Inc()
	r.Counter("badlabel.x").Inc()
	r.Counter("failed.x").Inc()
	r.Counter("plain").Inc()
	fams, err := Collect(r, Options{Mapper: m, SkipNative: true, OnSkip: func(string, error) {}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := summary(fams), `fleet_latency_seconds histogram {route="index"} n=1 native=false
fleet_latency_seconds histogram {route="login"} n=1 native=false
plain gauge  1
`; got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if fams[0].Help != "Request latency." || fams[0].Unit != "seconds" {
		t.Errorf("help %q unit %q", fams[0].Help, fams[0].Unit)
	}
	_, skips := collect(t, r, Options{Mapper: m})
	if err := skips["failed.x"]; !errors.Is(err, ErrUnexpressible) || !strings.Contains(err.Error(), "rule 3 puts le") {
		t.Errorf("failed.x: skip %v, want the mapping's reason", err)
	}
	for _, n := range []string{"bad.x", "badlabel.x"} {
		if !errors.Is(skips[n], ErrUnexpressible) {
			t.Errorf("%s: skip %v, want ErrUnexpressible", n, skips[n])
		}
	}
	if _, ok := skips["noise.x"]; ok || len(skips) != 3 {
		t.Errorf("skips %v: a dropped metric is not a skip", skips)
	}
}

func TestCollisionsSkipWhole(t *testing.T) {
	r := registry.New()
	r.Counter("a.b").Inc()
	r.Counter("a_b").Inc()     // same series as a.b
	r.Histogram("h").Update(1) // reserves h_count
	r.Gauge("h_count", func() float64 { return 1 })
	r.Meter("x").Mark(1)       // x_total counter
	r.Counter("x_total").Inc() // gauge x_total: type clash
	r.Counter("1x").Inc()
	_, skips := collect(t, r, Options{})
	for _, n := range []string{"a_b", "h_count", "x_total"} {
		if !errors.Is(skips[n], ErrCollision) {
			t.Errorf("%s: skip %v, want ErrCollision", n, skips[n])
		}
	}
	if !errors.Is(skips["1x"], ErrUnexpressible) {
		t.Errorf("1x: %v", skips["1x"])
	}
	if len(skips) != 4 {
		t.Errorf("skips: %v", skips)
	}
	if _, err := Collect(r, Options{Namespace: "9"}, nil); err == nil {
		t.Error("namespace 9 accepted")
	}
}

// OpenMetrics names a counter's family without "_total": a gauge of that
// name would be a second family of the same name there.
func TestCounterStemCollidesWithGauge(t *testing.T) {
	r := registry.New()
	r.Gauge("a", func() float64 { return 1 })
	r.Meter("a_total").Mark(1) // a_total counter, OpenMetrics family "a"
	r.Meter("b.total").Mark(1)
	r.Gauge("b_x", func() float64 { return 1 })
	got, skips := collect(t, r, Options{})
	if !errors.Is(skips["a_total"], ErrCollision) || len(skips) != 1 {
		t.Errorf("skips %v, want a_total only", skips)
	}
	if want := "a gauge  1\nb_total counter  1\nb_x gauge  1\n"; got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
