package tests

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// scrape GETs the host's /metrics with an Accept header and decodes the
// body with expfmt's parser of the format the host answered in.
func scrape(t *testing.T, h *hostProc, accept string) (map[string]*dto.MetricFamily, []byte, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+h.addr+"/metrics", nil)
	req.Header.Set("Accept", accept)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	ct := resp.Header.Get("Content-Type")
	dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.Format(ct))
	fams := map[string]*dto.MetricFamily{}
	for {
		mf := &dto.MetricFamily{}
		err := dec.Decode(mf)
		if errors.Is(err, io.EOF) {
			return fams, body, ct
		}
		if err != nil {
			t.Fatalf("Accept %q: %s body unreadable: %v", accept, ct, err)
		}
		fams[mf.GetName()] = mf
	}
}

// tapes-host's /metrics under its -prometheus-* flags: the protobuf format
// carries a worker's timer as a native histogram with exact classic
// buckets beside it, counters as _total counters, the rate gauges; the
// text format passes promtool; OpenMetrics parses.
func TestHostScrapeFormatsAndFlags(t *testing.T) {
	dir := t.TempDir()
	h := startHost(t, "-shm", filepath.Join(dir, "s.shm"), "-http", "127.0.0.1:0",
		"-prometheus-counters=counter", "-prometheus-classic-buckets", "-prometheus-rates")
	const n = 1000
	if err := worker(t, h.shm, "-n", "1000").Wait(); err != nil {
		t.Fatal(err)
	}
	h.waitStat("test.latency.count", eq(n), "timer drained")

	fams, _, ct := scrape(t, h, "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3")
	if !strings.HasPrefix(ct, "application/vnd.google.protobuf") {
		t.Fatalf("Content-Type %q", ct)
	}
	lat := fams["test_latency_seconds"].GetMetric()[0].GetHistogram()
	if lat.GetSampleCount() != n || lat.GetSchema() != 6 || len(lat.GetPositiveSpan()) == 0 {
		t.Errorf("test_latency_seconds: count %d schema %d spans %d, want a native histogram of %d", lat.GetSampleCount(), lat.GetSchema(), len(lat.GetPositiveSpan()), n)
	}
	var total uint64
	var c int64
	for _, d := range lat.GetPositiveDelta() {
		c += d
		total += uint64(c)
	}
	if total+lat.GetZeroCount() != n {
		t.Errorf("native buckets hold %d values, want %d", total+lat.GetZeroCount(), n)
	}
	// The worker recorded 1..1000 µs: 976 of them are <= 2^-10 s.
	found := false
	for _, b := range lat.GetBucket() {
		if b.GetUpperBound() == 1.0/1024 {
			found = b.GetCumulativeCount() == 976
		}
	}
	if !found {
		t.Errorf("classic bucket le=2^-10 missing or not 976: %v", lat.GetBucket())
	}
	if v := fams["test_requests_total"].GetMetric()[0].GetCounter().GetValue(); v != n {
		t.Errorf("test_requests_total = %v, want a counter of %d", v, n)
	}
	if fams["test_jobs_m1_rate"] == nil || fams["tapes_host_prometheus_skipped"].GetMetric()[0].GetGauge().GetValue() != 0 {
		t.Errorf("rates %v, skipped %v", fams["test_jobs_m1_rate"], fams["tapes_host_prometheus_skipped"])
	}

	_, text, ct := scrape(t, h, "text/plain")
	if !strings.HasPrefix(ct, "text/plain; version=0.0.4") || !bytes.Contains(text, []byte("\ntest_latency_seconds_bucket{le=\"0.0009765625\"} 976\n")) {
		t.Errorf("text (%s) lacks the classic bucket:\n%s", ct, text)
	}
	promtoolCheck(t, string(text))
	if om, body, _ := scrape(t, h, "application/openmetrics-text;version=1.0.0"); om["test_requests_total"].GetType() != dto.MetricType_COUNTER || !bytes.HasSuffix(body, []byte("# EOF\n")) {
		t.Errorf("OpenMetrics: %v", om["test_requests_total"])
	}
	h.stop(syscall.SIGTERM)
}

// Metrics whose names collide after mapping are left out of /metrics,
// logged once each through the host's logger, and counted.
func TestHostCountsSkippedMetrics(t *testing.T) {
	dir := t.TempDir()
	h := startHost(t, "-shm", filepath.Join(dir, "k.shm"), "-http", "127.0.0.1:0")
	for _, prefix := range []string{"x.y", "x_y"} {
		if err := worker(t, h.shm, "-n", "10", "-prefix", prefix).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	h.waitStat("x_y.latency.count", eq(10), "second worker drained")
	// x_y.* writes the same series as x.y.*, which comes first in name
	// order: its four metrics are left out.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if bytes.Contains(h.get("/metrics"), []byte("\ntapes_host_prometheus_skipped 4\n")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tapes_host_prometheus_skipped never 4:\n%s", h.get("/metrics"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for range 3 {
		h.get("/metrics")
		time.Sleep(1100 * time.Millisecond) // past -http-cache: a new render
	}
	logs := h.stderr()
	for _, name := range []string{"x_y.requests", "x_y.latency", "x_y.jobs", "x_y.sizes"} {
		if n := strings.Count(logs, "metric left out of /metrics\" metric="+name+" "); n != 1 {
			t.Errorf("%s logged %d times, want once:\n%s", name, n, logs)
		}
	}
	h.stop(syscall.SIGTERM)
}
