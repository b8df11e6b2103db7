// Package remotewrite pushes a registry to a Prometheus remote write 1.0
// receiver (Prometheus with --web.enable-remote-write-receiver, Thanos,
// Mimir, VictoriaMetrics, Cortex): a snappy-compressed protobuf
// WriteRequest POSTed every report.
//
//	rep, _ := remotewrite.New(reg, remotewrite.Options{URL: "http://prom:9090/api/v1/write"})
//	s := reporters.Start(ctx, rep, 10*time.Second)
//	defer rep.Close()                             // after the last report:
//	defer s.StopAndFlush(context.Background())    // deferred calls run last-first
//
// Names, labels and types are those of every labelled output (package
// expo, with the mapping): a counter family's series carry its value, a
// gauge's its value, a histogram or timer is a native histogram with the
// registry's own buckets (exact, never re-bucketed; receivers need native
// histograms on: Prometheus' --enable-feature=native-histograms), and with
// Options.ClassicBuckets also name_bucket{le=...}, name_sum and name_count.
// Every series gets Options.Labels where it has no label of that name, as
// Prometheus' external_labels: a fleet needs one label telling hosts
// apart (tapes-host sets instance).
//
// Report never waits for the receiver: it encodes and queues the request,
// and a goroutine of its own sends it (package push: bounded queue dropping
// the oldest, retries with backoff, counts).
package remotewrite

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/expo"
	"github.com/tapes-go/tapes/reporters/internal/push"
	"github.com/tapes-go/tapes/reporters/mapping"
)

// PushOptions configure the sender (queue, timeouts, retries, counts);
// URL and Header are set by New.
type PushOptions = push.Options

// PushMetrics receive the sender's counts.
type PushMetrics = push.Metrics

// Stats are the sender's counts so far.
type Stats = push.Stats

// Options configure a Reporter.
type Options struct {
	// URL is the receiver's endpoint, e.g. http://host:9090/api/v1/write.
	URL string
	// Namespace prefixes every name, joined with '_'.
	Namespace string
	// Mapper, if not nil, names and labels the metrics it matches.
	Mapper *mapping.Mapper
	// CountersMonotonic writes tapes counters as counters ("_total")
	// instead of gauges; see expo.
	CountersMonotonic bool
	// Rates adds the m1/m5/m15/mean_rate gauges of meters and timers.
	Rates bool
	// ClassicBuckets adds name_bucket, name_sum and name_count series
	// for every histogram and timer, for receivers without native
	// histograms, at ClassicBounds (counted by expo.ClassicCounts), or
	// without them at expo.ClassicBounds: the rule of the scrape exposition.
	ClassicBuckets bool
	// ClassicBounds are the classic buckets' upper bounds, ascending and
	// finite (+Inf is implied), in seconds for timers. Fixed bounds add up
	// across a fleet; derived ones span each host's own values.
	ClassicBounds []float64
	// Labels are added to every series that has no label of that name.
	Labels []mapping.Label
	// OnSkip is called for every metric left out, with the reason.
	OnSkip func(name string, err error)
	// Push configures the sender; Name defaults to "remote_write".
	Push PushOptions
	// CloseTimeout bounds how long Close sends what is queued; default
	// the push timeout.
	CloseTimeout time.Duration
}

// The sender's defaults, for Options.Push's zero fields.
const (
	DefaultQueue       = push.DefaultQueue
	DefaultTimeout     = push.DefaultTimeout
	DefaultMaxAttempts = push.DefaultMaxAttempts
)

// CheckLabels reports the first label whose name Prometheus would refuse.
func CheckLabels(ls []mapping.Label) error {
	for _, l := range ls {
		if !expo.ValidLabelName(l.Name) {
			return fmt.Errorf("label name %q: want [a-zA-Z_][a-zA-Z0-9_]*, not starting with __", l.Name)
		}
	}
	return nil
}

// Reporter is a reporters.Reporter pushing r on every Report.
type Reporter struct {
	reg  *registry.Registry
	o    Options
	eo   expo.Options
	push *push.Pusher

	mu  sync.Mutex // one Report at a time: they reuse the memory below
	col expo.Collector
	enc encoder
}

// Headers every remote write 1.0 request carries.
var headers = http.Header{
	"Content-Encoding":                  {"snappy"},
	"Content-Type":                      {"application/x-protobuf"},
	"User-Agent":                        {"tapes-remotewrite"},
	"X-Prometheus-Remote-Write-Version": {"0.1.0"},
}

// New checks o and starts the sender. Close stops it.
func New(r *registry.Registry, o Options) (*Reporter, error) {
	if o.URL == "" {
		return nil, fmt.Errorf("remote write: no URL")
	}
	if err := CheckLabels(o.Labels); err != nil {
		return nil, fmt.Errorf("remote write: %w", err)
	}
	for i, b := range o.ClassicBounds {
		switch {
		case math.IsInf(b, 0) || math.IsNaN(b):
			return nil, fmt.Errorf("remote write: ClassicBounds: %g: bounds must be finite (+Inf is implied)", b)
		case i > 0 && b <= o.ClassicBounds[i-1]:
			return nil, fmt.Errorf("remote write: ClassicBounds: %g after %g: bounds must ascend", b, o.ClassicBounds[i-1])
		}
	}
	eo := expo.Options{Namespace: o.Namespace, Mapper: o.Mapper, Rates: o.Rates,
		CountersMonotonic: o.CountersMonotonic, OnSkip: o.OnSkip}
	// A bad namespace is a configuration error: say so now, not per report.
	if _, err := expo.Collect(registry.New(), eo, nil); err != nil {
		return nil, fmt.Errorf("remote write: %w", err)
	}
	po := o.Push
	po.URL = o.URL
	po.Header = headers
	if po.Name == "" {
		po.Name = "remote_write"
	}
	p, err := push.New(po)
	if err != nil {
		return nil, fmt.Errorf("remote write: %w", err)
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = po.Timeout
		if o.CloseTimeout <= 0 {
			o.CloseTimeout = push.DefaultTimeout
		}
	}
	rep := &Reporter{reg: r, o: o, eo: eo, push: p}
	rep.enc.external = slices.Clone(o.Labels)
	slices.SortFunc(rep.enc.external, func(a, b mapping.Label) int { return cmp.Compare(a.Name, b.Name) })
	rep.enc.classic = o.ClassicBuckets
	rep.enc.bounds = slices.Clone(o.ClassicBounds)
	return rep, nil
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
// snappy-compressed WriteRequest.
func (r *Reporter) Encode(now time.Time) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fams, err := r.col.Collect(r.reg, r.eo)
	if err != nil {
		return nil, fmt.Errorf("remote write: %w", err)
	}
	req := r.enc.request(fams, now.UnixMilli())
	raw, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("remote write: encoding: %w", err)
	}
	return snappy.Encode(nil, raw), nil
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

// encoder builds WriteRequests from families.
type encoder struct {
	external []mapping.Label // sorted
	classic  bool
	bounds   []float64 // Options.ClassicBounds
}

func (e *encoder) request(fams []expo.Family, ts int64) *prompb.WriteRequest {
	req := &prompb.WriteRequest{}
	for i := range fams {
		f := &fams[i]
		req.Metadata = append(req.Metadata, prompb.MetricMetadata{
			Type: metaType(f.Type), MetricFamilyName: f.Name, Help: f.HelpText(), Unit: f.Unit})
		var les []float64
		// The mapping's observer_type decides for the families it names
		// (classic buckets at its buckets, or none), the options for the
		// rest; native buckets are always sent.
		classic := e.classic && f.Observer != mapping.ObserverSummary || f.Observer == mapping.ObserverHistogram
		if f.Type == expo.Histogram && classic {
			les = e.bounds
			if f.Observer == mapping.ObserverHistogram && len(f.Buckets) > 0 {
				les = f.Buckets
			}
			if len(les) == 0 {
				ns := make([]*registry.NativeHistogram, 0, len(f.Samples))
				for j := range f.Samples {
					if f.Samples[j].Native != nil {
						ns = append(ns, f.Samples[j].Native)
					}
				}
				les = expo.ClassicBounds(ns)
			}
		}
		for j := range f.Samples {
			s := &f.Samples[j]
			switch f.Type {
			case expo.Counter, expo.Gauge:
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
					Labels:  e.labels(f.Name, s.Labels),
					Samples: []prompb.Sample{{Value: s.Value, Timestamp: ts}},
				})
			case expo.Histogram:
				if s.Native == nil {
					continue
				}
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
					Labels:     e.labels(f.Name, s.Labels),
					Histograms: []prompb.Histogram{nativeHistogram(s.Native, ts)},
				})
				if classic {
					req.Timeseries = e.appendClassic(req.Timeseries, f.Name, s, les, ts)
				}
			}
		}
	}
	return req
}

func metaType(t expo.Type) prompb.MetricMetadata_MetricType {
	switch t {
	case expo.Counter:
		return prompb.MetricMetadata_COUNTER
	case expo.Gauge:
		return prompb.MetricMetadata_GAUGE
	case expo.Histogram:
		return prompb.MetricMetadata_HISTOGRAM
	}
	return prompb.MetricMetadata_UNKNOWN
}

// labels are __name__, the sample's labels, and the external labels the
// sample does not have, sorted by name as remote write requires; extra
// are added last (le).
func (e *encoder) labels(name string, ls []mapping.Label, extra ...prompb.Label) []prompb.Label {
	out := make([]prompb.Label, 0, 1+len(ls)+len(e.external)+len(extra))
	out = append(out, prompb.Label{Name: "__name__", Value: name})
	for _, l := range ls {
		out = append(out, prompb.Label{Name: l.Name, Value: l.Value})
	}
	for _, x := range e.external {
		if !slices.ContainsFunc(ls, func(l mapping.Label) bool { return l.Name == x.Name }) {
			out = append(out, prompb.Label{Name: x.Name, Value: x.Value})
		}
	}
	out = append(out, extra...)
	slices.SortFunc(out, func(a, b prompb.Label) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// nativeHistogram is n as a remote write histogram: the same schema,
// spans and zero bucket (Prometheus and the registry index buckets alike),
// counts as the deltas the format wants.
func nativeHistogram(n *registry.NativeHistogram, ts int64) prompb.Histogram {
	return prompb.Histogram{
		Count:          &prompb.Histogram_CountInt{CountInt: n.Count},
		Sum:            n.Sum,
		Schema:         n.Schema,
		ZeroThreshold:  n.ZeroThreshold,
		ZeroCount:      &prompb.Histogram_ZeroCountInt{ZeroCountInt: n.ZeroCount},
		NegativeSpans:  spans(n.NegativeSpans),
		NegativeDeltas: deltas(n.NegativeCounts),
		PositiveSpans:  spans(n.PositiveSpans),
		PositiveDeltas: deltas(n.PositiveCounts),
		Timestamp:      ts,
	}
}

func spans(in []registry.BucketSpan) []prompb.BucketSpan {
	out := make([]prompb.BucketSpan, len(in))
	for i, s := range in {
		out[i] = prompb.BucketSpan{Offset: s.Offset, Length: s.Length}
	}
	return out
}

func deltas(counts []uint64) []int64 {
	out := make([]int64, len(counts))
	prev := int64(0)
	for i, c := range counts {
		out[i] = int64(c) - prev
		prev = int64(c)
	}
	return out
}

// appendClassic writes s's classic series at the bounds les.
func (e *encoder) appendClassic(ts []prompb.TimeSeries, name string, s *expo.Sample, les []float64, t int64) []prompb.TimeSeries {
	n := s.Native
	counts := expo.ClassicCounts(nil, n, les)
	for i, c := range counts {
		le := math.Inf(1)
		if i < len(les) {
			le = les[i]
		}
		ts = append(ts, prompb.TimeSeries{
			Labels:  e.labels(name+"_bucket", s.Labels, prompb.Label{Name: "le", Value: formatLe(le)}),
			Samples: []prompb.Sample{{Value: float64(c), Timestamp: t}},
		})
	}
	ts = append(ts,
		prompb.TimeSeries{Labels: e.labels(name+"_sum", s.Labels), Samples: []prompb.Sample{{Value: n.Sum, Timestamp: t}}},
		prompb.TimeSeries{Labels: e.labels(name+"_count", s.Labels), Samples: []prompb.Sample{{Value: float64(n.Count), Timestamp: t}}},
	)
	return ts
}

// formatLe writes a bound as Prometheus' client libraries do.
func formatLe(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
