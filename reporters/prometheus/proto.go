package prometheus

import (
	"io"
	"math"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/expo"
	"github.com/tapes-go/tapes/reporters/mapping"
)

// The protobuf and OpenMetrics outputs go through client_model's types and
// expfmt's encoders, the Prometheus project's own: the wire details (the
// delimited framing, delta-encoded native buckets, OpenMetrics' suffix and
// EOF rules) are theirs to get right, and they change with Prometheus.

// writeProto writes st.fams as delimited protobuf MetricFamily messages,
// histograms and timers as native histograms.
func (st *state) writeProto(w io.Writer, o *Options) error {
	enc := expfmt.NewEncoder(w, expfmt.FmtProtoDelim)
	for i := range st.fams {
		if err := enc.Encode(st.dtoFamily(&st.fams[i], o, true)); err != nil {
			return err
		}
	}
	return nil
}

// writeOpenMetrics writes st.fams as OpenMetrics 1.0 text: histograms and
// timers as summaries, or as classic histograms with ClassicBuckets (1.0
// has no native histograms).
func (st *state) writeOpenMetrics(w io.Writer, o *Options) error {
	enc := expfmt.NewEncoder(w, expfmt.FmtOpenMetrics_1_0_0)
	for i := range st.fams {
		if err := enc.Encode(st.dtoFamily(&st.fams[i], o, false)); err != nil {
			return err
		}
	}
	return enc.(expfmt.Closer).Close()
}

// dtoFamily converts one family. native: histograms carry their native
// buckets (protobuf); else they are summaries or classic histograms.
func (st *state) dtoFamily(f *expo.Family, o *Options, native bool) *dto.MetricFamily {
	mf := &dto.MetricFamily{Name: proto.String(f.Name), Help: proto.String(f.HelpText())}
	if f.Unit != "" {
		mf.Unit = proto.String(f.Unit)
	}
	typ := dto.MetricType_GAUGE
	switch f.Type {
	case expo.Counter:
		typ = dto.MetricType_COUNTER
	case expo.Histogram:
		typ = dto.MetricType_HISTOGRAM
		if !native && !o.ClassicBuckets {
			typ = dto.MetricType_SUMMARY
		}
	}
	mf.Type = typ.Enum()
	var bounds []float64
	if f.Type == expo.Histogram && o.ClassicBuckets {
		bounds = st.familyBounds(f, o)
	}
	mf.Metric = make([]*dto.Metric, len(f.Samples))
	for i := range f.Samples {
		s := &f.Samples[i]
		m := &dto.Metric{Label: dtoLabels(s.Labels)}
		switch typ {
		case dto.MetricType_COUNTER:
			m.Counter = &dto.Counter{Value: proto.Float64(s.Value)}
		case dto.MetricType_GAUGE:
			m.Gauge = &dto.Gauge{Value: proto.Float64(s.Value)}
		case dto.MetricType_SUMMARY:
			m.Summary = dtoSummary(s.Snapshot)
		case dto.MetricType_HISTOGRAM:
			m.Histogram = st.dtoHistogram(s.Native, bounds, native, o.ClassicBuckets)
		}
		mf.Metric[i] = m
	}
	return mf
}

func dtoLabels(ls []mapping.Label) []*dto.LabelPair {
	if len(ls) == 0 {
		return nil
	}
	out := make([]*dto.LabelPair, len(ls))
	for i, l := range ls {
		out[i] = &dto.LabelPair{Name: proto.String(l.Name), Value: proto.String(l.Value)}
	}
	return out
}

func dtoSummary(s *registry.HistogramSnapshot) *dto.Summary {
	q := make([]*dto.Quantile, len(registry.Quantiles))
	for i, at := range registry.Quantiles {
		v := s.Quantiles[i]
		if s.WindowCount == 0 {
			v = math.NaN()
		}
		q[i] = &dto.Quantile{Quantile: proto.Float64(at), Value: proto.Float64(v)}
	}
	return &dto.Summary{SampleCount: proto.Uint64(s.Count), SampleSum: proto.Float64(s.Sum), Quantile: q}
}

// dtoHistogram converts a native histogram: the registry's absolute bucket
// counts become client_model's deltas (each bucket's count minus the
// previous one's, the first against 0), spans, schema and zero bucket are
// copied as they are.
func (st *state) dtoHistogram(n *registry.NativeHistogram, bounds []float64, native, classic bool) *dto.Histogram {
	h := &dto.Histogram{SampleCount: proto.Uint64(n.Count), SampleSum: proto.Float64(n.Sum)}
	if native {
		h.Schema = proto.Int32(n.Schema)
		h.ZeroThreshold = proto.Float64(n.ZeroThreshold)
		h.ZeroCount = proto.Uint64(n.ZeroCount)
		h.PositiveSpan, h.PositiveDelta = dtoBuckets(n.PositiveSpans, n.PositiveCounts)
		h.NegativeSpan, h.NegativeDelta = dtoBuckets(n.NegativeSpans, n.NegativeCounts)
		if len(h.PositiveSpan) == 0 && len(h.NegativeSpan) == 0 && n.ZeroThreshold == 0 {
			// A histogram without observations is told native by its
			// zero threshold, or else by a no-op span (client_model's
			// rule).
			h.PositiveSpan = []*dto.BucketSpan{{Offset: proto.Int32(0), Length: proto.Uint32(0)}}
		}
	}
	if classic {
		st.cum = cumulative(st.cum[:0], n, bounds)
		h.Bucket = make([]*dto.Bucket, len(bounds), len(bounds)+1)
		for j, b := range bounds {
			h.Bucket[j] = &dto.Bucket{UpperBound: proto.Float64(b), CumulativeCount: proto.Uint64(st.cum[j])}
		}
		if !native {
			// OpenMetrics requires the +Inf bucket.
			h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(math.Inf(1)), CumulativeCount: proto.Uint64(n.Count)})
		}
	}
	return h
}

func dtoBuckets(spans []registry.BucketSpan, counts []uint64) ([]*dto.BucketSpan, []int64) {
	if len(spans) == 0 {
		return nil, nil
	}
	sp := make([]*dto.BucketSpan, len(spans))
	for i, s := range spans {
		sp[i] = &dto.BucketSpan{Offset: proto.Int32(s.Offset), Length: proto.Uint32(s.Length)}
	}
	deltas := make([]int64, len(counts))
	var prev int64
	for i, c := range counts {
		deltas[i] = int64(c) - prev
		prev = int64(c)
	}
	return sp, deltas
}
