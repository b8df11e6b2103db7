package reportertest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestStatsDAggregatesWhatIsSent(t *testing.T) {
	s := StartStatsD(t)
	conn, err := net.Dial("udp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	from := len(s.Flushes())
	fmt.Fprint(conn, "rt.c:3|c\nrt.g:1.5|g\nrt.t:12|ms\nrt.t:14|ms")
	fl := s.WaitFor(from, 10*time.Second, func(fl Flushes) bool { return len(fl.Timer("rt.t")) == 2 })
	if fl.Counter("rt.c") != 3 {
		t.Errorf("counter rt.c = %v, want 3", fl.Counter("rt.c"))
	}
	if g, ok := fl.Gauge("rt.g"); !ok || g != 1.5 {
		t.Errorf("gauge rt.g = %v, %v; want 1.5", g, ok)
	}
	if tv := fl.Timer("rt.t"); tv[0]+tv[1] != 26 {
		t.Errorf("timer rt.t = %v, want 12 and 14", tv)
	}
}

func TestPrometheusScrapesTarget(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, "# HELP rt_up_total test\n# TYPE rt_up_total counter\nrt_up_total 42\n")
	}))
	defer srv.Close()
	p := StartPrometheus(t, srv.Listener.Addr().String())
	res := p.WaitFor("rt_up_total", 30*time.Second, func(s []Sample) bool { return len(s) == 1 })
	if res[0].Value != 42 || res[0].Metric["job"] != "target0" {
		t.Fatalf("rt_up_total = %+v", res)
	}
	if _, err := p.Query("rt_up_total{"); err == nil {
		t.Fatal("a malformed query did not fail")
	}
}
