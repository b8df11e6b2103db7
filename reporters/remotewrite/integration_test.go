package remotewrite

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/mapping"
)

// receiver is a real Prometheus taking remote writes with native
// histograms on, scraping nothing.
type receiver struct {
	t   *testing.T
	url string
}

func startReceiver(t *testing.T) *receiver {
	t.Helper()
	server, _ := testenv.Prometheus(t) // in CI a missing server fails
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  evaluation_interval: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logPath := filepath.Join(dir, "log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(server, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver",
		"--enable-feature=native-histograms", "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("prometheus log:\n%s", b)
		}
	})
	r := &receiver{t: t, url: "http://" + addr}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(r.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return r
			}
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("prometheus exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus not ready within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// query runs an instant query returning a vector of floats, as
// "labels -> value" with labels in {a="b",...} order (name left out).
func (r *receiver) query(expr string) map[string]float64 {
	r.t.Helper()
	resp, err := http.Get(r.url + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status, Error string
		Data          struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		r.t.Fatalf("%s: %v", expr, err)
	}
	if body.Status != "success" {
		r.t.Fatalf("%s: %s", expr, body.Error)
	}
	out := map[string]float64{}
	for _, s := range body.Data.Result {
		delete(s.Metric, "__name__")
		var ks []string
		for k, v := range s.Metric {
			ks = append(ks, fmt.Sprintf("%s=%q", k, v))
		}
		sort.Strings(ks)
		key := "{"
		for i, k := range ks {
			if i > 0 {
				key += ","
			}
			key += k
		}
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			r.t.Fatalf("%s: value %v", expr, s.Value[1])
		}
		out[key+"}"] = v
	}
	return out
}

// TestRealPrometheus pushes a registry to a real Prometheus and reads the
// exact values back through its query API, native histograms included.
func TestRealPrometheus(t *testing.T) {
	prom := startReceiver(t)
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

	rep := newReporter(t, reg, Options{URL: prom.url + "/api/v1/write", Namespace: "app", ClassicBuckets: true,
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
		got := prom.query(expr)
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
		got := prom.query(fmt.Sprintf("histogram_quantile(%v, app_rpc_latency_seconds)", q))[inst]
		bound := 2 * registry.RelativeErrorAt(n.Schema)
		t.Logf("histogram_quantile(%v) = %v (exact %v, schema %d)", q, got, exact, n.Schema)
		if math.Abs(got-exact)/exact > bound {
			t.Errorf("histogram_quantile(%v) = %v, exact %v: beyond %.3g%%", q, got, exact, 100*bound)
		}
	}
}
