package remotewrite

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/reportertest"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/mapping"
)

// query runs an instant query returning a vector of floats, as
// "labels -> value" with labels in {a="b",...} order (name left out).
func query(t *testing.T, p *reportertest.Prometheus, expr string) map[string]float64 {
	t.Helper()
	res, err := p.Query(expr)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, s := range res {
		delete(s.Metric, "__name__")
		var ks []string
		for k, v := range s.Metric {
			ks = append(ks, fmt.Sprintf("%s=%q", k, v))
		}
		sort.Strings(ks)
		out["{"+strings.Join(ks, ",")+"}"] = s.Value
	}
	return out
}

// TestRealPrometheus pushes a registry to a real Prometheus and reads the
// exact values back through its query API, native histograms included.
func TestRealPrometheus(t *testing.T) {
	prom := reportertest.StartRemoteWriteReceiver(t)
	reg := registry.New()
	reg.Counter("jobs.done").Add(12)
	reg.Meter("http.requests").Mark(1234)
	reg.Gauge("queue.depth", func() float64 { return 17.25 })
	tm := reg.Timer("rpc.latency")
	// 1000 durations, 1ms..1s; the exact q0.9 is the 900th.
	var ds []time.Duration
	for i := 1; i <= 1000; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	tm.UpdateMany(ds)
	h := reg.Histogram("payload.bytes")
	for _, v := range []float64{100, 200, 300, 5000} {
		h.Update(v)
	}

	rep := newReporter(t, reg, Options{URL: prom.URL + "/api/v1/write", Namespace: "app", ClassicBuckets: true,
		Labels: []mapping.Label{{Name: "instance", Value: "host-a"}}})
	if err := rep.Report(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := rep.Stats()
		if s.Sent == 1 {
			break
		}
		if s.Failed > 0 || time.Now().After(deadline) {
			t.Fatalf("push did not succeed: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	inst := `{instance="host-a"}`
	for expr, want := range map[string]float64{
		"app_jobs_done":                            12,
		"app_http_requests_total":                  1234,
		"app_queue_depth":                          17.25,
		"histogram_count(app_rpc_latency_seconds)": 1000,
		"histogram_sum(app_rpc_latency_seconds)":   tm.Native().Sum,
		"histogram_count(app_payload_bytes)":       4,
		"histogram_sum(app_payload_bytes)":         5600,
		"app_payload_bytes_count":                  4,
		`app_payload_bytes_bucket{le="512"}`:       3,
		`app_payload_bytes_bucket{le="8192"}`:      4,
	} {
		got := query(t, prom, expr)
		key := inst
		if len(got) == 1 {
			for k := range got {
				if k != inst && k != `{instance="host-a",le="512"}` && k != `{instance="host-a",le="8192"}` {
					t.Errorf("%s: labels %s", expr, k)
				}
				key = k
			}
		}
		if v, ok := got[key]; !ok || len(got) != 1 || v != want {
			t.Errorf("%s = %v, want %v", expr, got, want)
		}
	}
	// The native histogram's quantile lies in the bucket of the exact
	// one, so within the registry's relative error of it (interpolation
	// inside a bucket is Prometheus' own).
	n := tm.Native()
	for q, exact := range map[float64]float64{0.5: 0.5, 0.9: 0.9, 0.99: 0.99} {
		got := query(t, prom, fmt.Sprintf("histogram_quantile(%v, app_rpc_latency_seconds)", q))[inst]
		bound := 2 * registry.RelativeErrorAt(n.Schema)
		t.Logf("histogram_quantile(%v) = %v (exact %v, schema %d)", q, got, exact, n.Schema)
		if math.Abs(got-exact)/exact > bound {
			t.Errorf("histogram_quantile(%v) = %v, exact %v: beyond %.3g%%", q, got, exact, 100*bound)
		}
	}
}

// TestRealPrometheusMapping: a statsd_exporter-format mapping file turns
// dotted names into one family with a label, and Prometheus computes the
// quantile across the labelled series from the native histograms.
func TestRealPrometheusMapping(t *testing.T) {
	prom := reportertest.StartRemoteWriteReceiver(t)
	m, err := mapping.Parse([]byte("mappings:\n- match: \"fleet.*.latency\"\n  name: \"fleet_latency\"\n  labels:\n    route: \"$1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	var all []float64
	for r, route := range []string{"index", "search"} {
		tm := reg.Timer("fleet." + route + ".latency")
		for i := 1; i <= 500; i++ {
			d := time.Duration(i*(r+1)) * time.Millisecond // index 1..500ms, search 2..1000ms
			tm.Update(d)
			all = append(all, d.Seconds())
		}
	}
	rep := newReporter(t, reg, Options{URL: prom.URL + "/api/v1/write", Mapper: m,
		Labels: []mapping.Label{{Name: "instance", Value: "h"}}})
	if err := rep.Report(t.Context()); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); rep.Stats().Sent == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) || rep.Stats().Failed > 0 {
			t.Fatalf("push: %+v", rep.Stats())
		}
	}
	got := query(t, prom, "histogram_count(fleet_latency_seconds)")
	if got[`{instance="h",route="index"}`] != 500 || got[`{instance="h",route="search"}`] != 500 || len(got) != 2 {
		t.Errorf("per route counts %v", got)
	}
	// The pooled p99 over both routes, from summed native histograms.
	sort.Float64s(all)
	exact := all[int(math.Ceil(0.99*float64(len(all))))-1]
	q := query(t, prom, "histogram_quantile(0.99, sum(fleet_latency_seconds))")["{}"]
	if math.Abs(q-exact)/exact > 0.015 {
		t.Errorf("pooled p99 %v, exact %v: beyond 1.5%%", q, exact)
	}
	t.Logf("pooled p99 from Prometheus %v, exact %v", q, exact)
}
