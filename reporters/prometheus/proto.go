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

// arena hands out the messages and scalar fields of one render from
// chunks, so that converting 10k native histograms costs a few hundred
// allocations instead of a hundred per histogram (every optional field of
// a client_model message is a pointer, every span a message). Chunks are
// never reused: a message lives as long as its render needs it.
type arena struct {
	u64   []uint64
	f64   []float64
	i32   []int32
	u32   []uint32
	i64   []int64
	str   []string
	spans []dto.BucketSpan
	sptrs []*dto.BucketSpan
	hists []dto.Histogram
	mets  []dto.Metric
	mptrs []*dto.Metric
	lbls  []dto.LabelPair
	lptrs []*dto.LabelPair
	buks  []dto.Bucket
	bptrs []*dto.Bucket
	qs    []dto.Quantile
	qptrs []*dto.Quantile
}

// take returns n fresh elements of *pool, refilling it when short.
func take[T any](pool *[]T, n int) []T {
	if len(*pool) < n {
		*pool = make([]T, max(n, 256))
	}
	s := (*pool)[:n:n]
	*pool = (*pool)[n:]
	return s
}

func (a *arena) uint64(v uint64) *uint64 {
	p := &take(&a.u64, 1)[0]
	*p = v
	return p
}

func (a *arena) float64(v float64) *float64 {
	p := &take(&a.f64, 1)[0]
	*p = v
	return p
}

func (a *arena) int32(v int32) *int32 {
	p := &take(&a.i32, 1)[0]
	*p = v
	return p
}

func (a *arena) uint32(v uint32) *uint32 {
	p := &take(&a.u32, 1)[0]
	*p = v
	return p
}

func (a *arena) string(v string) *string {
	p := &take(&a.str, 1)[0]
	*p = v
	return p
}

// dtoFamily converts one family. native: histograms carry their native
// buckets (protobuf); else they are summaries or classic histograms.
func (st *state) dtoFamily(f *expo.Family, o *Options, native bool) *dto.MetricFamily {
	a := &st.arena
	mf := &dto.MetricFamily{Name: a.string(f.Name), Help: a.string(f.HelpText())}
	if f.Unit != "" {
		mf.Unit = a.string(f.Unit)
	}
	typ := dto.MetricType_GAUGE
	switch f.Type {
	case expo.Counter:
		typ = dto.MetricType_COUNTER
	case expo.Histogram:
		typ = dto.MetricType_HISTOGRAM
		if !native && !classic(f, o) {
			typ = dto.MetricType_SUMMARY
		}
	}
	mf.Type = typ.Enum()
	var bounds []float64
	if f.Type == expo.Histogram && classic(f, o) {
		bounds = st.familyBounds(f, o)
	}
	mets := take(&a.mets, len(f.Samples))
	mf.Metric = take(&a.mptrs, len(f.Samples))
	for i := range f.Samples {
		s := &f.Samples[i]
		m := &mets[i]
		m.Label = a.labels(s.Labels)
		switch typ {
		case dto.MetricType_COUNTER:
			m.Counter = &dto.Counter{Value: a.float64(s.Value)}
		case dto.MetricType_GAUGE:
			m.Gauge = &dto.Gauge{Value: a.float64(s.Value)}
		case dto.MetricType_SUMMARY:
			m.Summary = a.summary(s.Snapshot, f.Quantiles, s.Quantiles)
		case dto.MetricType_HISTOGRAM:
			m.Histogram = st.dtoHistogram(s.Native, bounds, native, classic(f, o))
		}
		mf.Metric[i] = m
	}
	return mf
}

func (a *arena) labels(ls []mapping.Label) []*dto.LabelPair {
	if len(ls) == 0 {
		return nil
	}
	out := take(&a.lptrs, len(ls))
	pairs := take(&a.lbls, len(ls))
	for i, l := range ls {
		pairs[i].Name, pairs[i].Value = a.string(l.Name), a.string(l.Value)
		out[i] = &pairs[i]
	}
	return out
}

// summary converts a window's quantiles: the registry's own, or at (with
// their values vals) when the family's mapping names its quantiles.
func (a *arena) summary(s *registry.HistogramSnapshot, at, vals []float64) *dto.Summary {
	if at == nil {
		at, vals = registry.Quantiles[:], s.Quantiles[:]
	}
	q := take(&a.qptrs, len(at))
	qs := take(&a.qs, len(at))
	for i, at := range at {
		v := vals[i]
		if s.WindowCount == 0 {
			v = math.NaN()
		}
		qs[i].Quantile, qs[i].Value = a.float64(at), a.float64(v)
		q[i] = &qs[i]
	}
	return &dto.Summary{SampleCount: a.uint64(s.Count), SampleSum: a.float64(s.Sum), Quantile: q}
}

// dtoHistogram converts a native histogram: the registry's absolute bucket
// counts become client_model's deltas (each bucket's count minus the
// previous one's, the first against 0), spans, schema and zero bucket are
// copied as they are.
func (st *state) dtoHistogram(n *registry.NativeHistogram, bounds []float64, native, classic bool) *dto.Histogram {
	a := &st.arena
	h := &take(&a.hists, 1)[0]
	h.SampleCount, h.SampleSum = a.uint64(n.Count), a.float64(n.Sum)
	if native {
		h.Schema = a.int32(n.Schema)
		h.ZeroThreshold = a.float64(n.ZeroThreshold)
		h.ZeroCount = a.uint64(n.ZeroCount)
		h.PositiveSpan, h.PositiveDelta = a.buckets(n.PositiveSpans, n.PositiveCounts)
		h.NegativeSpan, h.NegativeDelta = a.buckets(n.NegativeSpans, n.NegativeCounts)
		if len(h.PositiveSpan) == 0 && len(h.NegativeSpan) == 0 && n.ZeroThreshold == 0 {
			// A histogram without observations is told native by its
			// zero threshold, or else by a no-op span (client_model's
			// rule).
			h.PositiveSpan = []*dto.BucketSpan{{Offset: proto.Int32(0), Length: proto.Uint32(0)}}
		}
	}
	if classic {
		st.cum = expo.ClassicCounts(st.cum[:0], n, bounds)
		nb := len(bounds)
		if !native {
			nb++ // OpenMetrics requires the +Inf bucket
		}
		h.Bucket = take(&a.bptrs, nb)
		buks := take(&a.buks, nb)
		for j, b := range bounds {
			buks[j].UpperBound, buks[j].CumulativeCount = a.float64(b), a.uint64(st.cum[j])
			h.Bucket[j] = &buks[j]
		}
		if !native {
			buks[nb-1].UpperBound, buks[nb-1].CumulativeCount = a.float64(math.Inf(1)), a.uint64(n.Count)
			h.Bucket[nb-1] = &buks[nb-1]
		}
	}
	return h
}

func (a *arena) buckets(spans []registry.BucketSpan, counts []uint64) ([]*dto.BucketSpan, []int64) {
	if len(spans) == 0 {
		return nil, nil
	}
	sp := take(&a.sptrs, len(spans))
	msgs := take(&a.spans, len(spans))
	for i, s := range spans {
		msgs[i].Offset, msgs[i].Length = a.int32(s.Offset), a.uint32(s.Length)
		sp[i] = &msgs[i]
	}
	deltas := take(&a.i64, len(counts))
	var prev int64
	for i, c := range counts {
		deltas[i] = int64(c) - prev
		prev = int64(c)
	}
	return sp, deltas
}
