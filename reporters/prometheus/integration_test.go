package prometheus_test

import (
	"math"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/reportertest"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/prometheus"
)

// TestRealPrometheusScrapesHandler has the Prometheus server scrape the
// handler on loopback and reads the values back through its query API.
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

	srv := httptest.NewServer(prometheus.Handler(r, prometheus.Options{Namespace: "tapes"}))
	defer srv.Close()
	p := reportertest.StartPrometheus(t, srv.URL+"/metrics")

	one := func(s []reportertest.Sample) bool { return len(s) == 1 }
	res := p.WaitFor("tapes_jobs_done_total", 30*time.Second, one)
	if res[0].Value != 7 {
		t.Errorf("tapes_jobs_done_total = %v, want 7", res[0].Value)
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

	// Later scrapes see new values.
	c.Add(5)
	p.WaitFor("tapes_jobs_done_total", 20*time.Second, func(s []reportertest.Sample) bool {
		return len(s) == 1 && s[0].Value == 12
	})
}
