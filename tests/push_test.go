//go:build linux

package tests

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/reportertest"
)

// The push tests: the real tapes-host pushing what real workers record to
// a real Prometheus (remote write) and the Collector's real OTLP receiver,
// and to receivers that are down or never answer.

func otlpReceiverBin(t testing.TB) string {
	return builds.Path(t, "otlpreceiver", reportertest.OTLPReceiverBuild())
}

// TestPushToRealReceivers: one worker's counter, meter, timer and
// histogram reach Prometheus and the OTLP receiver with the same exact
// numbers, labelled with the host's instance.
func TestPushToRealReceivers(t *testing.T) {
	prom := reportertest.StartRemoteWriteReceiver(t)
	rcv := reportertest.StartOTLPReceiver(t, otlpReceiverBin(t))
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "t.shm"), "-http", "127.0.0.1:0", "-interval", "200ms",
		"-remote-write-url", prom.URL+"/api/v1/write", "-otlp-url", rcv.URL, "-push-label", "fleet=test")
	w := worker(t, h.shm, "-n", "1000", "-prefix", "pw")
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	h.waitStat("pw.requests.value", eq(1000), "drained")
	hostname, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(h.addr)
	instance := hostname + ":" + port

	// Sum of the timer's durations: 1..1000 µs.
	const latencySum = 1000 * 1001 / 2 * 1e-6
	for expr, want := range map[string]float64{
		"pw_requests":                         1000,
		"pw_jobs_total":                       2000,
		"histogram_count(pw_latency_seconds)": 1000,
		"histogram_count(pw_sizes)":           1000,
		"histogram_sum(pw_sizes)":             500500,
	} {
		prom.WaitFor(expr, 30*time.Second, func(s []reportertest.Sample) bool {
			return len(s) == 1 && s[0].Value == want
		})
	}
	res := prom.WaitFor("histogram_sum(pw_latency_seconds)", 30*time.Second, func(s []reportertest.Sample) bool { return len(s) == 1 })
	if got := res[0].Value; got < latencySum*(1-1e-9) || got > latencySum*(1+1e-9) {
		t.Errorf("timer sum %v, want %v", got, latencySum)
	}
	res = prom.WaitFor("pw_requests", time.Second, func(s []reportertest.Sample) bool { return len(s) == 1 })
	if l := res[0].Metric; l["instance"] != instance || l["fleet"] != "test" {
		t.Errorf("labels %v, want instance=%s fleet=test", l, instance)
	}

	// OTLP: the newest request carries the same numbers.
	var last map[string]jsonPoint
	deadline := time.Now().Add(30 * time.Second)
	for {
		reqs := rcv.Requests(t)
		if len(reqs) > 0 {
			last = otlpPoints(t, reqs[len(reqs)-1])
			if last["pw_requests"].AsInt == "1000" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("OTLP receiver never got pw_requests = 1000; last %v\nstderr:\n%s", last, h.stderr())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for name, want := range map[string]string{"pw_jobs": "2000", "pw_latency_seconds": "1000", "pw_sizes": "1000"} {
		p := last[name]
		if got := p.AsInt + p.Count; got != want {
			t.Errorf("OTLP %s = %+v, want %s", name, p, want)
		}
	}
	if s := last["pw_sizes"].Sum; s == nil || *s != 500500 {
		t.Errorf("OTLP pw_sizes sum %v", s)
	}
	if r := last["resource"]; r.Attrs["service.instance.id"] != instance || r.Attrs["service.name"] != "tapes-host" || r.Attrs["fleet"] != "test" {
		t.Errorf("OTLP resource %v", r.Attrs)
	}
	h.waitStat("tapes.host.push.remote_write.sent.value", func(v float64) bool { return v >= 1 }, "remote write self-metric")
	h.waitStat("tapes.host.push.otlp.sent.value", func(v float64) bool { return v >= 1 }, "OTLP self-metric")
	h.stop(syscall.SIGTERM)
}

type jsonPoint struct {
	AsInt string
	Count string
	Sum   *float64
	Attrs map[string]string
}

// otlpPoints reads one OTLP/JSON request into metric name -> its first
// point, and "resource" -> the resource attributes.
func otlpPoints(t *testing.T, doc []byte) map[string]jsonPoint {
	t.Helper()
	var md struct {
		ResourceMetrics []struct {
			Resource struct {
				Attributes []struct {
					Key   string
					Value struct{ StringValue string }
				}
			}
			ScopeMetrics []struct {
				Metrics []struct {
					Name                 string
					Sum, Gauge           *struct{ DataPoints []jsonPoint }
					ExponentialHistogram *struct{ DataPoints []jsonPoint }
				}
			}
		}
	}
	if err := json.Unmarshal(doc, &md); err != nil {
		t.Fatal(err)
	}
	out := map[string]jsonPoint{}
	rm := md.ResourceMetrics[0]
	res := jsonPoint{Attrs: map[string]string{}}
	for _, a := range rm.Resource.Attributes {
		res.Attrs[a.Key] = a.Value.StringValue
	}
	out["resource"] = res
	for _, m := range rm.ScopeMetrics[0].Metrics {
		for _, d := range []*struct{ DataPoints []jsonPoint }{m.Sum, m.Gauge, m.ExponentialHistogram} {
			if d != nil && len(d.DataPoints) > 0 {
				out[m.Name] = d.DataPoints[0]
			}
		}
	}
	return out
}

// hungReceiver accepts connections and never reads or answers them.
func hungReceiver(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never answered
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// downReceiver is an address nothing listens on: connections are refused.
func downReceiver(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// TestPushDeadReceiversCostNothing is the attack: remote write to a
// receiver that accepts and never answers (with an hour's request
// timeout), OTLP to one that is down, both reporting every 50ms. A worker
// records at a fixed rate meanwhile: its ring must drop nothing (the host
// keeps draining), every event must be counted, scrapes must be answered,
// the pushers' queues stay within -push-queue and count what they drop,
// and SIGTERM still ends the host promptly (the last flush gives up after
// its bound).
func TestPushDeadReceiversCostNothing(t *testing.T) {
	h := startHost(t, "-shm", filepath.Join(t.TempDir(), "t.shm"), "-http", "127.0.0.1:0", "-http-cache", "0",
		"-interval", "50ms", "-push-timeout", "1h", "-push-queue", "4",
		"-remote-write-url", hungReceiver(t)+"/api/v1/write", "-otlp-url", downReceiver(t)+"/v1/metrics")
	w := startRateWorker(t, h.shm, "-histograms", "200", "-rate", "20000", "-duration", "3s")
	sc := newScraper(t, h.addr)
	scrapes := 0
	// Scrape (each one a render: -http-cache 0) for as long as the worker records.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		if _, err := sc.get("/metrics"); err != nil {
			t.Fatalf("scrape %d with dead receivers: %v", scrapes, err)
		}
		scrapes++
		if scrapes%20 == 0 {
			if st, _ := lookup(sc.stats(), "tapes.host.push.remote_write.queued.value"); st > 5 {
				t.Errorf("remote write queue %v beyond -push-queue 4 (+1 in flight)", st)
			}
		}
	}
	n := w.wait() // fails the test if the worker's ring dropped anything
	sc.waitValue("load.ticks.value", eq(float64(n)), "every event drained")
	dropped := sc.waitValue("tapes.host.push.remote_write.dropped.value", func(v float64) bool { return v > 0 }, "remote write drops counted")
	sc.waitValue("tapes.host.push.otlp.retries.value", func(v float64) bool { return v > 0 }, "OTLP retries counted")
	t.Logf("%d scrapes answered while pushing to dead receivers; %d worker events drained; remote write dropped %v requests",
		scrapes, n, dropped)
	start := time.Now()
	h.stop(syscall.SIGTERM)
	t.Logf("stopped in %v", time.Since(start))
	if !strings.Contains(h.stderr(), "push") {
		t.Errorf("no push failure logged:\n%s", h.stderr())
	}
}

// countingReceiver answers 204 to every request and counts them.
func countingReceiver(t *testing.T) (string, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &n
}

// SIGHUP moves the pushers to a new receiver: the old one stops getting
// requests, the new one gets them, the host keeps its self-metrics.
func TestPushReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	a, na := countingReceiver(t)
	b, nb := countingReceiver(t)
	cfg := filepath.Join(dir, "c.json")
	writeFile(t, cfg, `{"interval": "50ms", "remote-write-url": "`+a+`/api/v1/write"}`)
	h := startHost(t, "-config", cfg, "-shm", filepath.Join(dir, "t.shm"), "-http", "127.0.0.1:0")
	waitFor(t, 20*time.Second, "pushes to the first receiver", func() bool { return na.Load() >= 3 }, h.stderr)

	writeFile(t, cfg, `{"interval": "50ms", "remote-write-url": "`+b+`/api/v1/write", "otlp-url": "`+b+`/v1/metrics"}`)
	if err := h.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "pushers restarted", func() bool {
		return strings.Contains(h.stderr(), "SIGHUP: pushers restarted")
	}, h.stderr)
	waitFor(t, 20*time.Second, "pushes to the second receiver", func() bool { return nb.Load() >= 6 }, h.stderr)
	before := na.Load()
	time.Sleep(300 * time.Millisecond) // six intervals
	if after := na.Load(); after != before {
		t.Errorf("the old receiver still got %d requests after the reload", after-before)
	}
	h.waitStat("tapes.host.push.otlp.sent.value", func(v float64) bool { return v >= 1 }, "OTLP pusher started by the reload")
	if !strings.Contains(h.stderr(), "applied=\"otlp-url=") {
		t.Errorf("reload log lacks the applied push settings:\n%s", h.stderr())
	}
	h.stop(syscall.SIGTERM)
}
