package otlp

import (
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/reportertest"
	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/mapping"
)

var builds testenv.Builds

func TestMain(m *testing.M) { os.Exit(builds.Run(m)) }

// The pdata JSON of what the test reads (OTLP/JSON: 64-bit integers as
// strings).
type jsonMetrics struct {
	ResourceMetrics []struct {
		Resource struct {
			Attributes []jsonKV
		}
		ScopeMetrics []struct {
			Scope   struct{ Name string }
			Metrics []jsonMetric
		}
	}
}

type jsonKV struct {
	Key   string
	Value struct{ StringValue string }
}

type jsonNumber struct {
	Attributes        []jsonKV
	AsInt             string
	AsDouble          *float64
	StartTimeUnixNano string
	TimeUnixNano      string
}

type jsonMetric struct {
	Name, Unit, Description string
	Sum                     *struct {
		DataPoints             []jsonNumber
		AggregationTemporality int
		IsMonotonic            bool
	}
	Gauge *struct {
		DataPoints []jsonNumber
	}
	ExponentialHistogram *struct {
		AggregationTemporality int
		DataPoints             []struct {
			Attributes []jsonKV
			Count      string
			Sum        *float64
			Scale      int32
			ZeroCount  string
			Positive   struct {
				Offset       int32
				BucketCounts []string
			}
			Negative struct {
				Offset       int32
				BucketCounts []string
			}
			Min, Max *float64
		}
	}
}

func TestRealCollectorReceiver(t *testing.T) {
	rcv := reportertest.StartOTLPReceiver(t, builds.Path(t, "otlpreceiver", reportertest.OTLPReceiverBuild()))
	url := rcv.URL
	reg := registry.New()
	reg.Counter("jobs.done").Add(12)
	reg.Counter("jobs.done").Dec()
	reg.Meter("http.requests").Mark(1234)
	reg.Gauge("queue.depth", func() float64 { return 17.25 })
	tm := reg.Timer("rpc.latency")
	for i := 1; i <= 100; i++ {
		tm.Update(time.Duration(i) * time.Millisecond)
	}
	h := reg.Histogram("temp")
	for _, v := range []float64{-2.5, 0, 1, 1, 40} {
		h.Update(v)
	}
	rep := newReporter(t, reg, Options{URL: url, Namespace: "app", ServiceName: "tapes-test",
		Resource: []mapping.Label{{Name: "service.instance.id", Value: "host-a"}}})
	if err := rep.Report(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for rep.Stats().Sent == 0 {
		if s := rep.Stats(); s.Failed > 0 || time.Now().After(deadline) {
			t.Fatalf("push did not succeed: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var lines [][]byte
	for lines = rcv.Requests(t); len(lines) == 0 && time.Now().Before(deadline); lines = rcv.Requests(t) {
		time.Sleep(10 * time.Millisecond) // written before it answered; polled to be sure
	}
	if len(lines) != 1 {
		t.Fatalf("receiver wrote %d lines, want 1", len(lines))
	}
	var got jsonMetrics
	if err := json.Unmarshal(lines[0], &got); err != nil {
		t.Fatal(err)
	}
	rm := got.ResourceMetrics[0]
	res := map[string]string{}
	for _, a := range rm.Resource.Attributes {
		res[a.Key] = a.Value.StringValue
	}
	if res["service.name"] != "tapes-test" || res["service.instance.id"] != "host-a" {
		t.Errorf("resource %v", res)
	}
	ms := map[string]jsonMetric{}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		ms[m.Name] = m
	}
	const cumulative = 2
	if m := ms["app_jobs_done"]; m.Sum == nil || m.Sum.IsMonotonic || m.Sum.AggregationTemporality != cumulative || m.Sum.DataPoints[0].AsInt != "11" {
		t.Errorf("counter: %+v", m)
	}
	if m := ms["app_http_requests"]; m.Sum == nil || !m.Sum.IsMonotonic || m.Sum.DataPoints[0].AsInt != "1234" {
		t.Errorf("meter: %+v", m)
	}
	if m := ms["app_queue_depth"]; m.Gauge == nil || m.Gauge.DataPoints[0].AsDouble == nil || *m.Gauge.DataPoints[0].AsDouble != 17.25 {
		t.Errorf("gauge: %+v", m)
	}
	// Timer: every bucket exactly as the registry holds it, shifted by one.
	m := ms["app_rpc_latency_seconds"]
	if m.ExponentialHistogram == nil || m.Unit != "s" || m.ExponentialHistogram.AggregationTemporality != cumulative {
		t.Fatalf("timer: %+v", m)
	}
	p := m.ExponentialHistogram.DataPoints[0]
	n := tm.Native()
	if p.Count != "100" || p.Sum == nil || *p.Sum != n.Sum || p.Scale != n.Schema || p.Min != nil {
		t.Errorf("timer point %+v (native %+v)", p, n)
	}
	if p.Positive.Offset != n.PositiveSpans[0].Offset-1 {
		t.Errorf("offset %d, Prometheus index %d", p.Positive.Offset, n.PositiveSpans[0].Offset)
	}
	var dense []uint64
	ci := 0
	for j, sp := range n.PositiveSpans {
		if j > 0 {
			dense = append(dense, make([]uint64, sp.Offset)...)
		}
		dense = append(dense, n.PositiveCounts[ci:ci+int(sp.Length)]...)
		ci += int(sp.Length)
	}
	if len(dense) != len(p.Positive.BucketCounts) {
		t.Fatalf("%d buckets, want %d", len(p.Positive.BucketCounts), len(dense))
	}
	for i, c := range p.Positive.BucketCounts {
		if c != strconv.FormatUint(dense[i], 10) {
			t.Errorf("bucket %d: %s, want %d", i, c, dense[i])
		}
	}
	// Histogram with a negative value and zeros: no sum (OTLP), the zero
	// bucket and one negative bucket.
	hp := ms["app_temp"].ExponentialHistogram.DataPoints[0]
	if hp.Count != "5" || hp.Sum != nil || hp.ZeroCount != "1" || len(hp.Negative.BucketCounts) != 1 || hp.Negative.BucketCounts[0] != "1" {
		t.Errorf("histogram point %+v", hp)
	}
}
