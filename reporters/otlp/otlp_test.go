package otlp

import (
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/mapping"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newReporter(t *testing.T, reg *registry.Registry, o Options) *Reporter {
	t.Helper()
	if o.URL == "" {
		o.URL = "http://127.0.0.1:1/v1/metrics"
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

func byName(md *metricspb.MetricsData) map[string]*metricspb.Metric {
	out := map[string]*metricspb.Metric{}
	for _, rm := range md.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				out[m.Name] = m
			}
		}
	}
	return out
}

func TestKindsAndValues(t *testing.T) {
	reg := registry.New()
	reg.Counter("jobs.done").Add(5)
	reg.Counter("jobs.done").Dec()
	reg.Meter("requests").Mark(42)
	reg.Gauge("temp", func() float64 { return 21.5 })
	reg.Timer("rpc.latency").Update(3 * time.Millisecond)
	r := newReporter(t, reg, Options{Namespace: "app", Rates: true, ServiceName: "svc",
		Resource: []mapping.Label{{Name: "service.instance.id", Value: "h1"}}})
	now := time.Unix(1_700_000_000, 5)
	md, err := r.Collect(now)
	if err != nil {
		t.Fatal(err)
	}
	res := map[string]string{}
	for _, a := range md.ResourceMetrics[0].Resource.Attributes {
		res[a.Key] = a.Value.GetStringValue()
	}
	if res["service.name"] != "svc" || res["service.instance.id"] != "h1" || res["host.name"] == "" {
		t.Errorf("resource %v", res)
	}
	if s := md.ResourceMetrics[0].ScopeMetrics[0].Scope.Name; s != ScopeName {
		t.Errorf("scope %q", s)
	}
	ms := byName(md)

	// A tapes counter can Dec: an UpDownCounter (non-monotonic Sum).
	c := ms["app_jobs_done"].GetSum()
	if c == nil || c.IsMonotonic || c.AggregationTemporality != metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE ||
		c.DataPoints[0].GetAsInt() != 4 || c.DataPoints[0].TimeUnixNano != uint64(now.UnixNano()) || c.DataPoints[0].StartTimeUnixNano != r.start {
		t.Errorf("counter: %v", ms["app_jobs_done"])
	}
	// A meter is monotonic, named without _total.
	m := ms["app_requests"].GetSum()
	if m == nil || !m.IsMonotonic || m.DataPoints[0].GetAsInt() != 42 {
		t.Errorf("meter: %v (metrics %v)", ms["app_requests"], keys(ms))
	}
	if _, ok := ms["app_requests_total"]; ok {
		t.Error("meter written with _total")
	}
	if g := ms["app_temp"].GetGauge(); g == nil || g.DataPoints[0].GetAsDouble() != 21.5 {
		t.Errorf("gauge: %v", ms["app_temp"])
	}
	// A meter's rate is a double gauge, though its source is a meter.
	if g := ms["app_requests_m1_rate"].GetGauge(); g == nil {
		t.Errorf("rate: %v", ms["app_requests_m1_rate"])
	} else if _, ok := g.DataPoints[0].Value.(*metricspb.NumberDataPoint_AsDouble); !ok {
		t.Errorf("rate as %T", g.DataPoints[0].Value)
	}
	tm := ms["app_rpc_latency_seconds"]
	if tm.GetUnit() != "s" || tm.GetExponentialHistogram() == nil {
		t.Fatalf("timer: %v", tm)
	}
	p := tm.GetExponentialHistogram().DataPoints[0]
	if p.Count != 1 || p.GetSum() != 0.003 || p.Scale != 6 || p.Min != nil || p.Max != nil {
		t.Errorf("timer point %v", p)
	}
}

func TestCountersMonotonicOption(t *testing.T) {
	reg := registry.New()
	reg.Counter("c").Add(3)
	r := newReporter(t, reg, Options{CountersMonotonic: true})
	md, _ := r.Collect(time.Now())
	s := byName(md)["c"].GetSum()
	if s == nil || !s.IsMonotonic || s.DataPoints[0].GetAsInt() != 3 {
		t.Errorf("%v", byName(md))
	}
}

// TestIndexConvention checks the offset between the layouts: every value
// must land in the OTLP bucket whose range, by OTLP's definition (index i
// holds (base^i, base^(i+1)]), contains it.
func TestIndexConvention(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, v := range []float64{1, 2, 0.5, 1024, 3, 1e-6, 7.77} {
		checkOne(t, v)
	}
	for range 200 {
		checkOne(t, math.Exp(rng.NormFloat64()*5))
	}
	// A lowered schema keeps the convention.
	n := registry.NativeHistogram{Schema: -2, Count: 1, PositiveSpans: []registry.BucketSpan{{Offset: 3, Length: 1}}, PositiveCounts: []uint64{1}}
	p := exponentialPoint(&n, nil, 0, 0)
	if p.Scale != -2 || p.Positive.Offset != 2 {
		t.Errorf("schema -2, Prometheus bucket 3: scale %d offset %d, want -2 and 2", p.Scale, p.Positive.Offset)
	}
}

func checkOne(t *testing.T, v float64) {
	t.Helper()
	reg := registry.New()
	h := reg.Histogram("h")
	h.Update(v)
	h.Update(-v)
	n := h.Native()
	p := exponentialPoint(&n, nil, 0, 0)
	base := math.Exp2(math.Exp2(-float64(p.Scale)))
	for _, b := range []*metricspb.ExponentialHistogramDataPoint_Buckets{p.Positive, p.Negative} {
		if b == nil || len(b.BucketCounts) != 1 || b.BucketCounts[0] != 1 {
			t.Fatalf("v=%v: buckets %v", v, b)
		}
		lo, hi := math.Pow(base, float64(b.Offset)), math.Pow(base, float64(b.Offset+1))
		// Pow rounds: allow a tolerance above the upper bound (a value on
		// a boundary belongs below it), none at the lower one, which a
		// boundary value (1, 2, 0.5: exact powers) must exceed.
		if !(v > lo && v <= hi*(1+1e-12)) {
			t.Errorf("|v|=%v in OTLP bucket %d at scale %d = (%v, %v]", v, b.Offset, p.Scale, lo, hi)
		}
	}
	if p.Sum != nil {
		t.Errorf("sum %v set with negative values", *p.Sum)
	}
}

func TestDenseBucketsFillGaps(t *testing.T) {
	b := buckets([]registry.BucketSpan{{Offset: -3, Length: 2}, {Offset: 2, Length: 1}}, []uint64{4, 5, 6})
	want := []uint64{4, 5, 0, 0, 6}
	if b.Offset != -4 || len(b.BucketCounts) != len(want) {
		t.Fatalf("%v", b)
	}
	for i := range want {
		if b.BucketCounts[i] != want[i] {
			t.Errorf("%v, want %v", b.BucketCounts, want)
		}
	}
}

func TestEncodeIsExportRequest(t *testing.T) {
	reg := registry.New()
	reg.Gauge("g", func() float64 { return 1 })
	r := newReporter(t, reg, Options{})
	z, err := r.Encode(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	// ExportMetricsServiceRequest: field 1, repeated ResourceMetrics.
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != 1 || typ != protowire.BytesType {
		t.Errorf("first field %d type %d", num, typ)
	}
	var md metricspb.MetricsData
	if err := proto.Unmarshal(b, &md); err != nil || len(byName(&md)) != 1 {
		t.Errorf("%v %v", err, &md)
	}
}

func TestCheckResponse(t *testing.T) {
	partial := protowire.AppendTag(nil, 1, protowire.VarintType)
	partial = protowire.AppendVarint(partial, 3)
	partial = protowire.AppendTag(partial, 2, protowire.BytesType)
	partial = protowire.AppendString(partial, "bad points")
	resp := protowire.AppendTag(nil, 1, protowire.BytesType)
	resp = protowire.AppendBytes(resp, partial)
	if err := checkResponse(resp); err == nil || err.Error() != `receiver rejected 3 data points: "bad points"` {
		t.Errorf("partial success: %v", err)
	}
	for _, ok := range [][]byte{nil, {}, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), nil), {0xff}} {
		if err := checkResponse(ok); err != nil {
			t.Errorf("%x: %v", ok, err)
		}
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{{}, {URL: "http://x", Namespace: "a b"}, {URL: "http://x", Resource: []mapping.Label{{Value: "v"}}}} {
		if r, err := New(registry.New(), o); err == nil {
			r.Close()
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func keys(m map[string]*metricspb.Metric) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// BenchmarkEncode1000Timers: one report's work (collect, encode) for 1000
// timers with ~100 buckets each.
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

func TestMappingLabelsBecomeAttributes(t *testing.T) {
	m, err := mapping.Parse([]byte("mappings:\n- match: \"fleet.*.latency\"\n  name: \"fleet_latency\"\n  labels:\n    route: \"$1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	reg.Timer("fleet.index.latency").Update(time.Millisecond)
	reg.Timer("fleet.search.latency").Update(2 * time.Millisecond)
	r := newReporter(t, reg, Options{Mapper: m})
	md, _ := r.Collect(time.Now())
	h := byName(md)["fleet_latency_seconds"].GetExponentialHistogram()
	if h == nil || len(h.DataPoints) != 2 {
		t.Fatalf("%v", byName(md))
	}
	for i, route := range []string{"index", "search"} {
		a := h.DataPoints[i].Attributes
		if len(a) != 1 || a[0].Key != "route" || a[0].Value.GetStringValue() != route || h.DataPoints[i].Count != 1 {
			t.Errorf("point %d: %v", i, h.DataPoints[i])
		}
	}
}
