package remotewrite

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/expo"
	"github.com/tapes-go/tapes/reporters/mapping"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func decode(t *testing.T, body []byte) *prompb.WriteRequest {
	t.Helper()
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatalf("not snappy: %v", err)
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		t.Fatalf("not a WriteRequest: %v", err)
	}
	return &req
}

// series indexes a request's series by their label string.
func series(req *prompb.WriteRequest) map[string]prompb.TimeSeries {
	m := map[string]prompb.TimeSeries{}
	for _, ts := range req.Timeseries {
		m[labelString(ts.Labels)] = ts
	}
	return m
}

func labelString(ls []prompb.Label) string {
	s := ""
	for i, l := range ls {
		if i > 0 {
			s += ","
		}
		s += l.Name + "=" + l.Value
	}
	return s
}

func newReporter(t *testing.T, reg *registry.Registry, o Options) *Reporter {
	t.Helper()
	if o.URL == "" {
		o.URL = "http://127.0.0.1:1/unused"
	}
	if o.Push.Logger == nil {
		o.Push.Logger = quiet
	}
	if o.CloseTimeout == 0 {
		o.CloseTimeout = time.Second
	}
	r, err := New(reg, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestEncodeValuesAndLabels(t *testing.T) {
	reg := registry.New()
	reg.Counter("jobs.done").Add(7)
	reg.Counter("jobs.done").Dec()
	reg.Meter("requests").Mark(42)
	reg.Gauge("temp", func() float64 { return -1.5 })
	tm := reg.Timer("rpc.latency")
	for _, d := range []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Second} {
		tm.Update(d)
	}
	r := newReporter(t, reg, Options{Namespace: "app",
		Labels: []mapping.Label{{Name: "job", Value: "tapes"}, {Name: "instance", Value: "h1:8889"}}})
	now := time.UnixMilli(1_700_000_000_123)
	req := decode(t, mustEncode(t, r, now))
	got := series(req)
	ext := ",instance=h1:8889,job=tapes"
	for key, want := range map[string]float64{
		"__name__=app_jobs_done" + ext:      6,  // a counter that can Dec is a gauge
		"__name__=app_requests_total" + ext: 42, // a meter is a counter
		"__name__=app_temp" + ext:           -1.5,
	} {
		ts, ok := got[key]
		if !ok {
			t.Errorf("no series %s in %v", key, keys(got))
			continue
		}
		if len(ts.Samples) != 1 || ts.Samples[0].Value != want || ts.Samples[0].Timestamp != now.UnixMilli() {
			t.Errorf("%s: samples %+v, want one of %v at %d", key, ts.Samples, want, now.UnixMilli())
		}
	}
	ts, ok := got["__name__=app_rpc_latency_seconds"+ext]
	if !ok || len(ts.Histograms) != 1 || len(ts.Samples) != 0 {
		t.Fatalf("timer: %+v (series %v)", ts, keys(got))
	}
	h := ts.Histograms[0]
	n := tm.Native()
	if h.GetCountInt() != 3 || h.Sum != n.Sum || math.Abs(h.Sum-3.003) > 1e-12 || h.Schema != n.Schema ||
		h.ZeroThreshold != n.ZeroThreshold || h.Timestamp != now.UnixMilli() {
		t.Errorf("timer histogram %+v, native %+v", h, n)
	}
	// Deltas back to absolute counts: the registry's buckets exactly.
	var abs []uint64
	prev := int64(0)
	for _, d := range h.PositiveDeltas {
		prev += d
		abs = append(abs, uint64(prev))
	}
	if len(abs) != len(n.PositiveCounts) || len(h.PositiveSpans) != len(n.PositiveSpans) {
		t.Fatalf("buckets %v spans %v, want %v %v", abs, h.PositiveSpans, n.PositiveCounts, n.PositiveSpans)
	}
	for i := range abs {
		if abs[i] != n.PositiveCounts[i] {
			t.Errorf("bucket %d: %d, want %d", i, abs[i], n.PositiveCounts[i])
		}
	}
	for i, s := range h.PositiveSpans {
		if s.Offset != n.PositiveSpans[i].Offset || s.Length != n.PositiveSpans[i].Length {
			t.Errorf("span %d: %+v, want %+v", i, s, n.PositiveSpans[i])
		}
	}
	// Labels sorted by name, __name__ first here.
	for _, ts := range req.Timeseries {
		for i := 1; i < len(ts.Labels); i++ {
			if ts.Labels[i-1].Name >= ts.Labels[i].Name {
				t.Errorf("labels not sorted: %v", ts.Labels)
			}
		}
	}
	meta := map[string]prompb.MetricMetadata{}
	for _, m := range req.Metadata {
		meta[m.MetricFamilyName] = m
	}
	if meta["app_requests_total"].Type != prompb.MetricMetadata_COUNTER || meta["app_jobs_done"].Type != prompb.MetricMetadata_GAUGE ||
		meta["app_rpc_latency_seconds"].Type != prompb.MetricMetadata_HISTOGRAM || meta["app_rpc_latency_seconds"].Unit != "seconds" {
		t.Errorf("metadata %+v", meta)
	}
}

func TestSeriesLabelsWinOverExternal(t *testing.T) {
	reg := registry.New()
	reg.Gauge("g.pid-12", func() float64 { return 1 }) // expo gives it worker="12"
	r := newReporter(t, reg, Options{Labels: []mapping.Label{{Name: "worker", Value: "host"}, {Name: "a", Value: "b"}}})
	got := series(decode(t, mustEncode(t, r, time.Now())))
	if _, ok := got["__name__=g,a=b,worker=12"]; !ok {
		t.Errorf("series %v, want the sample's worker label kept and a=b added", keys(got))
	}
}

func TestNegativeAndZeroBuckets(t *testing.T) {
	reg := registry.New()
	h := reg.Histogram("h")
	for _, v := range []float64{-4, -4, -0.5, 0, 0, 0, 1, 100} {
		h.Update(v)
	}
	r := newReporter(t, reg, Options{})
	hist := series(decode(t, mustEncode(t, r, time.Now())))["__name__=h"].Histograms[0]
	n := h.Native()
	if hist.GetZeroCountInt() != 3 || hist.GetCountInt() != 8 || len(hist.NegativeSpans) != len(n.NegativeSpans) {
		t.Fatalf("histogram %+v, native %+v", hist, n)
	}
	sum := int64(0)
	total := uint64(0)
	for _, d := range hist.NegativeDeltas {
		sum += d
		total += uint64(sum)
	}
	if total != 3 {
		t.Errorf("negative buckets hold %d values, want 3", total)
	}
}

func TestClassicBounds(t *testing.T) {
	reg := registry.New()
	h := reg.Histogram("h")
	vals := []float64{-3, -1, 0, 0.3, 0.5, 0.7, 1, 3, 3, 1000}
	for _, v := range vals {
		h.Update(v)
	}
	n := h.Native()
	les := expo.ClassicBounds([]*registry.NativeHistogram{&n})
	if les[0] != 0.5 || les[len(les)-1] != 1024 {
		t.Errorf("bounds %v, want 0.5 (the lowest positive value's power of two) .. 1024", les)
	}
	for i := 1; i < len(les); i++ {
		if les[i] != 2*les[i-1] {
			t.Errorf("bounds %v: not every power of two", les)
		}
	}
	// Derived bounds and fixed positive ones on bucket boundaries are
	// exact.
	for _, les := range [][]float64{les, {1, 4, 2048}} {
		counts := expo.ClassicCounts(nil, &n, les)
		if len(counts) != len(les)+1 || counts[len(les)] != uint64(len(vals)) {
			t.Fatalf("counts %v for %v", counts, les)
		}
		for i, le := range les {
			want := uint64(0)
			for _, v := range vals {
				if v <= le {
					want++
				}
			}
			if counts[i] != want {
				t.Errorf("le=%v: %d, want %d (exact)", le, counts[i], want)
			}
		}
	}
	// A bound inside a native bucket counts that bucket above it; one
	// below the zero threshold counts the zero bucket above it.
	if c := expo.ClassicCounts(nil, &n, []float64{0, 2.999}); c[0] != 2 || c[1] != 7 {
		t.Errorf("le 0, 2.999: %v, want 2 (the negatives) and 7 (3 and 3 above)", c)
	}
	// A negative bucket holds [-b^i, -b^(i-1)): le=-1 lies in the one
	// holding -1, which counts above it.
	if c := expo.ClassicCounts(nil, &n, []float64{-4, -1}); c[0] != 0 || c[1] != 1 {
		t.Errorf("le -4, -1: %v, want 0 and 1 (-3; -1's bucket above)", c)
	}
	// A family's bounds span every sample; a lowered schema gives that
	// schema's boundaries.
	n2 := registry.NativeHistogram{Schema: -1, Count: 3, PositiveSpans: []registry.BucketSpan{{Offset: 1, Length: 2}}, PositiveCounts: []uint64{1, 2}}
	les = expo.ClassicBounds([]*registry.NativeHistogram{&n, &n2})
	if len(les) != 6 || les[0] != 1 || les[1] != 4 || les[5] != 1024 {
		t.Errorf("family bounds %v, want the powers of 4 from 1 (0.3 is in (0.25, 1]) to 1024", les)
	}
	if c := expo.ClassicCounts(nil, &n2, []float64{4, 16}); c[0] != 1 || c[1] != 3 || c[2] != 3 {
		t.Errorf("schema -1: %v, want le 4: 1, 16: 3, +Inf: 3", c)
	}
}

func TestClassicSeries(t *testing.T) {
	reg := registry.New()
	reg.Histogram("h").Update(3)
	r := newReporter(t, reg, Options{ClassicBuckets: true})
	got := series(decode(t, mustEncode(t, r, time.Now())))
	for key, want := range map[string]float64{
		"__name__=h_bucket,le=4":    1,
		"__name__=h_bucket,le=+Inf": 1,
		"__name__=h_sum":            3,
		"__name__=h_count":          1,
	} {
		if ts, ok := got[key]; !ok || ts.Samples[0].Value != want {
			t.Errorf("%s: %+v, want %v; series %v", key, ts, want, keys(got))
		}
	}
	if _, ok := got["__name__=h"]; !ok {
		t.Error("the native histogram is written beside the classic series")
	}
}

func TestBadOptions(t *testing.T) {
	reg := registry.New()
	for _, o := range []Options{
		{},
		{URL: "http://x", Namespace: "bad name"},
		{URL: "http://x", Labels: []mapping.Label{{Name: "__name__", Value: "x"}}},
		{URL: "http://x", Labels: []mapping.Label{{Name: "a-b", Value: "x"}}},
		{URL: "http://x", ClassicBounds: []float64{1, 1}},
		{URL: "http://x", ClassicBounds: []float64{1, math.Inf(1)}},
	} {
		if r, err := New(reg, o); err == nil {
			r.Close()
			t.Errorf("New(%+v) accepted", o)
		} else if t.Log(err); err.Error() == "" {
			t.Error("empty error")
		}
	}
}

func TestReportSendsWithHeaders(t *testing.T) {
	var mu sync.Mutex
	var hdr http.Header
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		mu.Lock()
		hdr, body = req.Header.Clone(), b
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	reg := registry.New()
	reg.Counter("c").Add(3)
	r := newReporter(t, reg, Options{URL: srv.URL})
	if err := r.Report(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for r.Stats().Sent == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for k, v := range map[string]string{"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
		"X-Prometheus-Remote-Write-Version": "0.1.0"} {
		if hdr.Get(k) != v {
			t.Errorf("%s: %q, want %q", k, hdr.Get(k), v)
		}
	}
	if got := series(decode(t, body))["__name__=c"]; len(got.Samples) != 1 || got.Samples[0].Value != 3 {
		t.Errorf("sent %+v", got)
	}
}

func mustEncode(t *testing.T, r *Reporter, now time.Time) []byte {
	t.Helper()
	b, err := r.Encode(now)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keys(m map[string]prompb.TimeSeries) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// BenchmarkEncode1000Timers: one report's work (collect, encode, compress)
// for 1000 timers with ~100 buckets each.
func BenchmarkEncode1000Timers(b *testing.B) {
	reg := registry.New()
	for i := range 1000 {
		tm := reg.Timer("svc.t" + strconv.Itoa(i))
		for j := 1; j <= 1000; j++ {
			tm.Update(time.Duration(j*j) * time.Microsecond)
		}
	}
	r, err := New(reg, Options{URL: "http://127.0.0.1:1/", Push: PushOptions{Logger: quiet}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var size int
	for b.Loop() {
		body, err := r.Encode(time.Now())
		if err != nil {
			b.Fatal(err)
		}
		size = len(body)
	}
	b.ReportMetric(float64(size), "body-bytes")
}

// A mapping asking for observer_type histogram gets classic series at its
// buckets beside the native histogram, without ClassicBuckets.
func TestMappingObserverHistogramAddsClassic(t *testing.T) {
	m, err := mapping.Parse([]byte("mappings:\n  - match: \"api.*.latency\"\n    name: \"api_latency\"\n    observer_type: histogram\n    histogram_options:\n      buckets: [0.5, 1]\n    labels:\n      route: \"$1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := registry.New()
	r.Timer("api.index.latency").Update(time.Second)
	r.Timer("other.latency").Update(time.Second)
	fams, err := expo.Collect(r, expo.Options{Mapper: m}, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := (&encoder{}).request(fams, 1)
	var names []string
	for _, ts := range req.Timeseries {
		for _, l := range ts.Labels {
			if l.Name == "__name__" {
				le := ""
				for _, l2 := range ts.Labels {
					if l2.Name == "le" {
						le = "{le=" + l2.Value + "}"
					}
				}
				names = append(names, l.Value+le)
			}
		}
	}
	got := strings.Join(names, " ")
	want := "api_latency_seconds api_latency_seconds_bucket{le=0.5} api_latency_seconds_bucket{le=1} api_latency_seconds_bucket{le=+Inf} api_latency_seconds_sum api_latency_seconds_count other_latency_seconds"
	if got != want {
		t.Errorf("series:\n got %s\nwant %s", got, want)
	}
}
