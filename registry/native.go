package registry

// BucketSpan is a run of consecutive buckets, as in Prometheus' native
// histograms: Offset is the gap from the end of the previous span (for the
// first span, the index of its first bucket), Length the number of buckets.
type BucketSpan struct {
	Offset int32
	Length uint32
}

// NativeHistogram is a histogram's bucket counts since creation in the
// layout Prometheus native histograms and OTLP exponential histograms
// share: bucket i at Schema holds the magnitudes in (base^(i-1), base^i],
// base = 2^(2^-Schema) (OTLP: scale = Schema, bucket index i-1); values
// with |v| <= ZeroThreshold are in ZeroCount. Counts are absolute (not
// Prometheus' deltas), one per bucket of the spans, in span order; empty
// buckets are left out. Count = ZeroCount + every bucket count, exactly.
type NativeHistogram struct {
	Schema        int32
	ZeroThreshold float64
	ZeroCount     uint64
	Count         uint64
	Sum           float64

	PositiveSpans  []BucketSpan
	PositiveCounts []uint64
	NegativeSpans  []BucketSpan // negative values, indexed by magnitude
	NegativeCounts []uint64
}

// Native returns the histogram's cumulative buckets for export.
func (h *Histogram) Native() NativeHistogram {
	var n NativeHistogram
	h.NativeInto(&n)
	return n
}

// NativeInto is Native into dst, reusing its slices' memory, so that an
// exporter that keeps one NativeHistogram allocates nothing per scrape
// once warmed up.
func (h *Histogram) NativeInto(dst *NativeHistogram) {
	sk := sketchPool.Get().(*Sketch)
	sk.reset(MaxSchema)
	dst.Count, dst.Sum = h.collect(sk, 0, &sk.b, nil)
	// collect reset sk to the histogram's schema before filling it.
	dst.Schema = sk.Schema()
	dst.ZeroThreshold = ZeroThreshold
	dst.ZeroCount = sk.b.zero
	dst.PositiveSpans, dst.PositiveCounts = spans(&sk.b.pos, dst.PositiveSpans[:0], dst.PositiveCounts[:0])
	dst.NegativeSpans, dst.NegativeCounts = spans(&sk.b.neg, dst.NegativeSpans[:0], dst.NegativeCounts[:0])
	sk.reset(MaxSchema)
	sketchPool.Put(sk)
}

func spans(s *span[uint64], sp []BucketSpan, counts []uint64) ([]BucketSpan, []uint64) {
	next := int32(0) // index after the last span
	for it := (iter[uint64]{s: s}); ; {
		i, c, ok := it.next()
		if !ok {
			break
		}
		if len(sp) > 0 && i == next {
			sp[len(sp)-1].Length++
		} else if len(sp) == 0 {
			sp = append(sp, BucketSpan{Offset: i, Length: 1})
		} else {
			sp = append(sp, BucketSpan{Offset: i - next, Length: 1})
		}
		counts = append(counts, c)
		next = i + 1
	}
	return sp, counts
}

// Native returns the timer's cumulative buckets of durations in seconds.
func (t *Timer) Native() NativeHistogram { return t.h.Native() }
