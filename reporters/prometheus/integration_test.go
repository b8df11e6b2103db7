package prometheus_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/reportertest"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/mapping"
	"github.com/tapes-go/tapes/reporters/prometheus"
	"github.com/tapes-go/tapes/wire"
)

// formats records the format of every scrape a handler answers.
type formats struct {
	h  http.Handler
	mu sync.Mutex
	n  map[prometheus.Format]int
}

func (f *formats) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.n[prometheus.Negotiate(r.Header)]++
	f.mu.Unlock()
	f.h.ServeHTTP(w, r)
}

func (f *formats) count() map[prometheus.Format]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps(f.n)
}

func maps(m map[prometheus.Format]int) map[prometheus.Format]int {
	out := map[prometheus.Format]int{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestRealPrometheusScrapesHandler has the Prometheus server scrape the
// handler on loopback (it asks for OpenMetrics) and reads the values back
// through its query API.
func TestRealPrometheusScrapesHandler(t *testing.T) {
	r := registry.New()
	c := r.Counter("jobs.done")
	c.Add(7)
	r.Gauge("queue.depth", nil).Set(3.5)
	tm := r.Timer("db.Query")
	for i := 1; i <= 100; i++ {
		tm.Update(time.Duration(i) * time.Millisecond)
	}
	r.Histogram("payload-size").Update(512)
	r.Meter("api.calls").Mark(3)

	f := &formats{h: prometheus.Handler(r, prometheus.Options{Namespace: "tapes", Rates: true}), n: map[prometheus.Format]int{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	// A second target: classic histograms, names Prometheus' OpenMetrics
	// parser must take (a gauge ending in _total, one ending in _count),
	// labels with characters to escape.
	r2 := registry.New()
	r2.Counter("tapes.host.shm.dropped_total").Add(4)
	r2.Gauge("queue.count", nil).Set(2)
	h2 := r2.Histogram("payload.size")
	for i := 1; i <= 64; i++ {
		h2.Update(float64(i))
	}
	odd := mapping.Func(func(name string, k wire.Kind) (mapping.Result, bool) {
		if name == "queue.count" {
			return mapping.Result{Name: "queue_count", Labels: []mapping.Label{{Name: "q", Value: "a\"b\\c"}}}, true
		}
		return mapping.Result{}, false
	})
	srv2 := httptest.NewServer(prometheus.Handler(r2, prometheus.Options{ClassicBuckets: true, Mapper: odd}))
	defer srv2.Close()
	p := reportertest.StartPrometheus(t, srv.URL+"/metrics", srv2.URL+"/metrics")

	one := func(s []reportertest.Sample) bool { return len(s) == 1 }
	res := p.WaitFor("tapes_jobs_done", 30*time.Second, one)
	if res[0].Value != 7 {
		t.Errorf("tapes_jobs_done = %v, want 7", res[0].Value)
	}
	res = p.WaitFor("tapes_queue_depth", 10*time.Second, one)
	if res[0].Value != 3.5 {
		t.Errorf("tapes_queue_depth = %v, want 3.5", res[0].Value)
	}
	res = p.WaitFor(`tapes_db_query_seconds{quantile="0.99"}`, 10*time.Second, one)
	if v := res[0].Value; math.Abs(v-0.099)/0.099 > 0.03 {
		t.Errorf("timer q99 = %v s, want ~0.099", v)
	}
	res = p.WaitFor("tapes_db_query_seconds_count", 10*time.Second, one)
	if res[0].Value != 100 {
		t.Errorf("tapes_db_query_seconds_count = %v, want 100", res[0].Value)
	}
	for _, name := range []string{"tapes_payload_size_sum", "tapes_api_calls_total", "tapes_api_calls_m1_rate", "tapes_db_query_m1_rate"} {
		p.WaitFor(name, 10*time.Second, one)
	}

	if up, err := p.Query(`up{job="target0"}`); err != nil || len(up) != 1 || up[0].Value != 1 {
		t.Errorf("up = %v, %v; want one target up", up, err)
	}
	// OpenMetrics writes bounds as floats ("32.0"; text 0.0.4 has "32"):
	// Prometheus 2.42 keeps the label as written.
	if res := p.WaitFor(`payload_size_bucket{job="target1",le="32.0"}`, 10*time.Second, one); res[0].Value != 32 {
		t.Errorf("payload_size_bucket{le=\"32.0\"} = %v, want 32", res[0].Value)
	}
	if res := p.WaitFor(`tapes_host_shm_dropped_total{job="target1"}`, 10*time.Second, one); res[0].Value != 4 {
		t.Errorf("tapes_host_shm_dropped_total = %v, want 4", res[0].Value)
	}
	if res := p.WaitFor(`queue_count{job="target1"}`, 10*time.Second, one); res[0].Metric["q"] != "a\"b\\c" || res[0].Value != 2 {
		t.Errorf("queue_count = %+v", res[0])
	}

	// Later scrapes see new values.
	c.Add(5)
	p.WaitFor("tapes_jobs_done", 20*time.Second, func(s []reportertest.Sample) bool {
		return len(s) == 1 && s[0].Value == 12
	})
	if n := f.count(); n[prometheus.FormatOpenMetrics] == 0 || len(n) != 1 {
		t.Errorf("scrapes by format %v, want OpenMetrics only (Prometheus' preference)", n)
	}
}

// TestRealPrometheusReadsNativeHistograms: a Prometheus with native
// histograms on scrapes the protobuf format, and histogram_quantile over
// the summed native histograms of three labelled series (labels from a
// mapping) lands within the registry's bucket error of the exact quantile
// of every value recorded, pooled and per label.
func TestRealPrometheusReadsNativeHistograms(t *testing.T) {
	route := mapping.Func(func(name string, k wire.Kind) (mapping.Result, bool) {
		p := strings.Split(name, ".")
		if len(p) == 3 && p[0] == "fleet" && p[2] == "latency" {
			return mapping.Result{Name: "fleet_latency", Labels: []mapping.Label{{Name: "route", Value: p[1]}}}, true
		}
		return mapping.Result{}, false
	})
	r := registry.New()
	routes := []string{"index", "login", "users"}
	timers := map[string]*registry.Timer{}
	for _, rt := range routes {
		timers[rt] = r.Timer("fleet." + rt + ".latency")
	}
	f := &formats{h: prometheus.Handler(r, prometheus.Options{Mapper: route}), n: map[prometheus.Format]int{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	p := reportertest.StartPrometheusWith(t, []string{"--enable-feature=native-histograms"}, srv.URL+"/metrics")

	// The first scrape sees the empty histograms: rate() then covers
	// every value recorded below.
	p.WaitFor(`histogram_count(fleet_latency_seconds)`, 30*time.Second, func(s []reportertest.Sample) bool { return len(s) == 3 })

	// q*n is never a whole number: at a whole rank the quantile is any
	// value between two recorded ones (across an empty gap of buckets,
	// histogram_quantile of a rate()'s float counts may take either side).
	const n = 3001
	rng := rand.New(rand.NewPCG(15, 1))
	vals := map[string][]float64{}
	var all []float64
	for i, rt := range routes {
		median := float64(i+1) * 0.02 // 20, 40, 60 ms
		for range n {
			d := time.Duration(median * math.Exp(0.7*rng.NormFloat64()) * 1e9)
			timers[rt].Update(d)
			vals[rt] = append(vals[rt], d.Seconds())
		}
		all = append(all, vals[rt]...)
	}
	p.WaitFor(`sum(histogram_count(fleet_latency_seconds))`, 20*time.Second, func(s []reportertest.Sample) bool {
		return len(s) == 1 && s[0].Value == 3*n
	})

	check := func(expr string, q float64, vs []float64) {
		t.Helper()
		res, err := p.Query(expr)
		if err != nil || len(res) != 1 {
			t.Fatalf("%s: %v, %v", expr, res, err)
		}
		want := exactQuantile(vs, q)
		if e := math.Abs(res[0].Value-want) / want; e > bucketWidth {
			t.Errorf("%s = %.6g, exact %.6g: error %.3f%% > %.3f%%", expr, res[0].Value, want, 100*e, 100*bucketWidth)
		} else {
			t.Logf("%s = %.6g, exact %.6g (error %.3f%%)", expr, res[0].Value, want, 100*e)
		}
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		check(fmt.Sprintf(`histogram_quantile(%v, sum(rate(fleet_latency_seconds[1m])))`, q), q, all)
		check(fmt.Sprintf(`histogram_quantile(%v, sum(fleet_latency_seconds))`, q), q, all)
		for _, rt := range routes {
			check(fmt.Sprintf(`histogram_quantile(%v, sum(rate(fleet_latency_seconds{route=%q}[1m])))`, q, rt), q, vals[rt])
			check(fmt.Sprintf(`histogram_quantile(%v, fleet_latency_seconds{route=%q})`, q, rt), q, vals[rt])
		}
	}
	if got := f.count(); got[prometheus.FormatProtobuf] == 0 || len(got) != 1 {
		t.Errorf("scrapes by format %v, want protobuf only", got)
	}
}

// bucketWidth is the relative width of a schema-6 bucket, 2^(1/64)-1 =
// 1.09%: histogram_quantile interpolates linearly inside the bucket that
// holds the exact quantile, so its answer is within one bucket width of it
// (registry.RelativeError, half that, bounds the registry's own midpoint
// estimate).
var bucketWidth = math.Exp2(1.0/64) - 1

// exactQuantile is the value of rank ceil(q*n) among vs.
func exactQuantile(vs []float64, q float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(i, 0)]
}
