// Package otlp pushes a registry to an OpenTelemetry receiver (the
// Collector's otlp receiver, or any OTLP/HTTP endpoint) as OTLP/HTTP
// protobuf: a POST to .../v1/metrics per report.
//
//	rep, _ := otlp.New(reg, otlp.Options{URL: "http://collector:4318/v1/metrics"})
//	s := reporters.Start(ctx, rep, 10*time.Second)
//	defer rep.Close()                             // after the last report:
//	defer s.StopAndFlush(context.Background())    // deferred calls run last-first
//
// Families come from package expo (names, mapping labels, types), and are
// written as:
//
//	expo Counter (meters; counters     Sum, monotonic, cumulative, int
//	  with CountersMonotonic)          name without "_total"
//	expo Gauge from tapes counters     Sum, non-monotonic, cumulative, int
//	                                   (OpenTelemetry's UpDownCounter: a
//	                                   tapes counter can Dec)
//	other expo Gauge (gauges, rates)   Gauge, double
//	expo Histogram (histograms,        ExponentialHistogram, cumulative:
//	  timers)                          scale = the registry's schema, the
//	                                   same buckets exactly; unit "s" and
//	                                   the name's "_seconds" for timers
//
// Prometheus' native histograms and OTLP's exponential histograms share
// the bucket layout, but not the index: Prometheus bucket i holds
// (base^(i-1), base^i], OTLP index i holds (base^i, base^(i+1)], so the
// OTLP offset is the Prometheus index minus one. Sum is left out when the
// histogram holds negative values, as the OTLP data model asks; min and
// max are left out (the registry keeps them for its recent window only,
// not for the cumulative population the buckets count).
//
// Every data point has the time of the report and, as start time, the
// time New was called (a cumulative series starts with its process: the
// host's registry is created with it). Resource attributes: service.name
// (Options.ServiceName), host.name, and Options.Resource.
//
// Report never waits for the receiver: a goroutine of its own sends
// (package push: bounded queue dropping the oldest, retries with backoff,
// counts). A receiver answering 200 with a partial_success that rejected
// data points counts the request as failed.
package otlp

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/expo"
	"github.com/tapes-go/tapes/reporters/internal/push"
	"github.com/tapes-go/tapes/reporters/mapping"
	"github.com/tapes-go/tapes/wire"
)

// PushOptions configure the sender (queue, timeouts, retries, counts);
// URL and Header are set by New.
type PushOptions = push.Options

// PushMetrics receive the sender's counts.
type PushMetrics = push.Metrics

// Stats are the sender's counts so far.
type Stats = push.Stats

// ScopeName is the instrumentation scope every metric is under.
const ScopeName = "github.com/tapes-go/tapes"

// Options configure a Reporter.
type Options struct {
	// URL is the receiver's metrics endpoint, e.g.
	// http://collector:4318/v1/metrics (the path is not added).
	URL string
	// Namespace prefixes every name, joined with '_'.
	Namespace string
	// Mapper, if not nil, names and labels (attributes) the metrics it
	// matches.
	Mapper *mapping.Mapper
	// CountersMonotonic writes tapes counters as monotonic Sums; see
	// expo.
	CountersMonotonic bool
	// Rates adds the m1/m5/m15/mean_rate gauges of meters and timers.
	Rates bool
	// ServiceName is the service.name resource attribute; default
	// "tapes".
	ServiceName string
	// Resource are more resource attributes (service.instance.id, ...);
	// they win over service.name and host.name.
	Resource []mapping.Label
	// OnSkip is called for every metric left out, with the reason.
	OnSkip func(name string, err error)
	// Push configures the sender; Name defaults to "otlp".
	Push PushOptions
	// CloseTimeout bounds how long Close sends what is queued; default
	// the push timeout.
	CloseTimeout time.Duration
}

// Reporter is a reporters.Reporter pushing r on every Report.
type Reporter struct {
	reg   *registry.Registry
	o     Options
	eo    expo.Options
	push  *push.Pusher
	start uint64 // unix nanoseconds
	res   *resourcepb.Resource

	mu  sync.Mutex // one Report at a time: it reuses col's memory
	col expo.Collector
}

// The body is gzipped (BestSpeed), as the OTLP exporters do by default:
// histograms' bucket counts compress well (1.4 MB -> 0.1 MB for 1000
// timers of ~700 buckets: BenchmarkEncode1000Timers).
var headers = http.Header{
	"Content-Encoding": {"gzip"},
	"Content-Type":     {"application/x-protobuf"},
	"User-Agent":       {"tapes-otlp"},
}

// New checks o and starts the sender. Close stops it.
func New(r *registry.Registry, o Options) (*Reporter, error) {
	if o.URL == "" {
		return nil, fmt.Errorf("otlp: no URL")
	}
	eo := expo.Options{Namespace: o.Namespace, Mapper: o.Mapper, Rates: o.Rates,
		CountersMonotonic: o.CountersMonotonic, OnSkip: o.OnSkip}
	if _, err := expo.Collect(registry.New(), eo, nil); err != nil {
		return nil, fmt.Errorf("otlp: %w", err)
	}
	if o.ServiceName == "" {
		o.ServiceName = "tapes"
	}
	attrs := map[string]string{"service.name": o.ServiceName}
	if h, err := os.Hostname(); err == nil {
		attrs["host.name"] = h
	}
	for _, l := range o.Resource {
		if l.Name == "" {
			return nil, fmt.Errorf("otlp: empty resource attribute name")
		}
		attrs[l.Name] = l.Value
	}
	res := &resourcepb.Resource{}
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		res.Attributes = append(res.Attributes, kv(k, attrs[k]))
	}
	po := o.Push
	po.URL = o.URL
	po.Header = headers
	if po.Name == "" {
		po.Name = "otlp"
	}
	po.Check = checkResponse
	p, err := push.New(po)
	if err != nil {
		return nil, fmt.Errorf("otlp: %w", err)
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = po.Timeout
		if o.CloseTimeout <= 0 {
			o.CloseTimeout = push.DefaultTimeout
		}
	}
	return &Reporter{reg: r, o: o, eo: eo, push: p, start: uint64(time.Now().UnixNano()), res: res}, nil
}

// Report collects the registry, encodes it and queues it for sending. It
// returns without waiting for the receiver; its error is only the
// collection's.
func (r *Reporter) Report(ctx context.Context) error {
	body, err := r.Encode(time.Now())
	if err != nil {
		return err
	}
	r.push.Enqueue(body)
	return nil
}

// Encode returns the request body Report would send at now: the
// gzipped protobuf.
func (r *Reporter) Encode(now time.Time) ([]byte, error) {
	md, err := r.Collect(now)
	if err != nil {
		return nil, err
	}
	b, err := proto.Marshal(md)
	if err != nil {
		return nil, fmt.Errorf("otlp: encoding: %w", err)
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed) // a valid level: no error
	zw.Write(b)
	zw.Close()
	return buf.Bytes(), nil
}

// Collect returns what Report would send at now. It is a MetricsData,
// whose encoding is that of the ExportMetricsServiceRequest OTLP/HTTP
// posts (both are field 1, repeated ResourceMetrics): using it keeps the
// gRPC service stubs out of the build.
func (r *Reporter) Collect(now time.Time) (*metricspb.MetricsData, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fams, err := r.col.Collect(r.reg, r.eo)
	if err != nil {
		return nil, fmt.Errorf("otlp: %w", err)
	}
	t := uint64(now.UnixNano())
	sm := &metricspb.ScopeMetrics{Scope: &commonpb.InstrumentationScope{Name: ScopeName}}
	for i := range fams {
		if m := r.metric(&fams[i], r.start, t); m != nil {
			sm.Metrics = append(sm.Metrics, m)
		}
	}
	return &metricspb.MetricsData{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource: r.res, ScopeMetrics: []*metricspb.ScopeMetrics{sm}}}}, nil
}

// Stats returns the sender's counts.
func (r *Reporter) Stats() Stats { return r.push.Stats() }

// Close sends what is queued (for at most Options.CloseTimeout) and stops
// the sender. Run it after the scheduler's last report.
func (r *Reporter) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.o.CloseTimeout)
	defer cancel()
	return r.push.Close(ctx)
}

// kindOf is the registry kind of a sample's source (0 if it is gone).
func (r *Reporter) kindOf(s *expo.Sample) wire.Kind {
	m, ok := r.reg.Get(s.Source)
	if !ok {
		return 0
	}
	return m.Kind()
}

func (r *Reporter) metric(f *expo.Family, start, t uint64) *metricspb.Metric {
	m := &metricspb.Metric{Name: f.Name, Description: f.HelpText()}
	if f.Unit == "seconds" {
		m.Unit = "s"
	}
	switch f.Type {
	case expo.Counter:
		m.Name = strings.TrimSuffix(f.Name, "_total")
		m.Data = &metricspb.Metric_Sum{Sum: &metricspb.Sum{
			AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
			IsMonotonic:            true,
			DataPoints:             r.numberPoints(f, start, t),
		}}
	case expo.Gauge:
		counters := true
		for i := range f.Samples {
			counters = counters && r.kindOf(&f.Samples[i]) == wire.KindCounter
		}
		if counters {
			m.Data = &metricspb.Metric_Sum{Sum: &metricspb.Sum{
				AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
				DataPoints:             r.numberPoints(f, start, t),
			}}
		} else {
			m.Data = &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: r.numberPoints(f, 0, t)}}
		}
	case expo.Histogram:
		h := &metricspb.ExponentialHistogram{
			AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE}
		for i := range f.Samples {
			s := &f.Samples[i]
			if s.Native != nil {
				h.DataPoints = append(h.DataPoints, exponentialPoint(s.Native, attributes(s.Labels), start, t))
			}
		}
		if len(h.DataPoints) == 0 {
			return nil
		}
		m.Data = &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: h}
	default:
		return nil
	}
	return m
}

// numberPoints are f's samples as points: integers for counters and
// meters (their registry values are int64), doubles otherwise. start 0
// (gauges) leaves the start time out.
func (r *Reporter) numberPoints(f *expo.Family, start, t uint64) []*metricspb.NumberDataPoint {
	out := make([]*metricspb.NumberDataPoint, 0, len(f.Samples))
	for i := range f.Samples {
		s := &f.Samples[i]
		p := &metricspb.NumberDataPoint{Attributes: attributes(s.Labels), StartTimeUnixNano: start, TimeUnixNano: t}
		// A meter's count is an integer, its rates are not.
		if k := r.kindOf(s); k == wire.KindCounter || k == wire.KindMeter && f.Type == expo.Counter {
			p.Value = &metricspb.NumberDataPoint_AsInt{AsInt: int64(s.Value)}
		} else {
			p.Value = &metricspb.NumberDataPoint_AsDouble{AsDouble: s.Value}
		}
		out = append(out, p)
	}
	return out
}

// exponentialPoint writes n with scale = its schema; see the package doc
// for the index shift.
func exponentialPoint(n *registry.NativeHistogram, attrs []*commonpb.KeyValue, start, t uint64) *metricspb.ExponentialHistogramDataPoint {
	p := &metricspb.ExponentialHistogramDataPoint{
		Attributes:        attrs,
		StartTimeUnixNano: start,
		TimeUnixNano:      t,
		Count:             n.Count,
		Scale:             n.Schema,
		ZeroCount:         n.ZeroCount,
		ZeroThreshold:     n.ZeroThreshold,
		Positive:          buckets(n.PositiveSpans, n.PositiveCounts),
		Negative:          buckets(n.NegativeSpans, n.NegativeCounts),
	}
	if len(n.NegativeCounts) == 0 {
		sum := n.Sum
		p.Sum = &sum
	}
	return p
}

// buckets makes the dense OTLP buckets of Prometheus-indexed spans.
func buckets(spans []registry.BucketSpan, counts []uint64) *metricspb.ExponentialHistogramDataPoint_Buckets {
	if len(spans) == 0 {
		return nil
	}
	first := spans[0].Offset
	var dense []uint64
	ci := 0
	for j, sp := range spans {
		if j > 0 {
			for range sp.Offset {
				dense = append(dense, 0)
			}
		}
		for range sp.Length {
			dense = append(dense, counts[ci])
			ci++
		}
	}
	return &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: first - 1, BucketCounts: dense}
}

func attributes(ls []mapping.Label) []*commonpb.KeyValue {
	if len(ls) == 0 {
		return nil
	}
	out := make([]*commonpb.KeyValue, len(ls))
	for i, l := range ls {
		out[i] = kv(l.Name, l.Value)
	}
	return out
}

func kv(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// checkResponse reads an ExportMetricsServiceResponse: a partial_success
// (field 1) with rejected_data_points (1) > 0 fails the request. Only the
// fields it needs are read; anything unreadable is ignored, as the status
// already said the request was accepted.
func checkResponse(b []byte) error {
	var rejected int64
	var msg string
	forEachField(b, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) {
		if num != 1 || typ != protowire.BytesType {
			return
		}
		forEachField(v, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) {
			switch {
			case num == 1 && typ == protowire.VarintType:
				rejected = int64(n)
			case num == 2 && typ == protowire.BytesType:
				msg = string(v)
			}
		})
	})
	if rejected > 0 {
		return fmt.Errorf("receiver rejected %d data points: %q", rejected, msg)
	}
	return nil
}

func forEachField(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, n uint64)) {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return
		}
		b = b[l:]
		var v []byte
		var n uint64
		switch typ {
		case protowire.VarintType:
			n, l = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(b)
		default:
			l = protowire.ConsumeFieldValue(num, typ, b)
		}
		if l < 0 {
			return
		}
		b = b[l:]
		f(num, typ, v, n)
	}
}
