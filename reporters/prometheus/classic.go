package prometheus

import (
	"math"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/expo"
	"github.com/tapes-go/tapes/reporters/mapping"
)

// upperBound is the upper bound of native bucket i at schema s:
// 2^(i/2^s), exact at every power of two.
func upperBound(i, s int32) float64 {
	if s <= 0 {
		return math.Ldexp(1, int(i)<<uint(-s))
	}
	if i%(1<<s) == 0 {
		return math.Ldexp(1, int(i>>s))
	}
	return math.Exp2(float64(i) / float64(int32(1)<<s))
}

// classic reports whether a histogram family gets classic buckets: its
// mapping's observer_type decides for the families it names, the options
// for the rest.
func classic(f *expo.Family, o *Options) bool {
	switch f.Observer {
	case mapping.ObserverHistogram:
		return true
	case mapping.ObserverSummary:
		return false
	}
	return o.ClassicBuckets
}

// familyBounds returns the classic bounds of a family: the mapping's
// buckets (histogram_options), o.ClassicBounds, or
// the powers of two from the lowest to the highest positive bucket any of
// its samples uses (at schema >= 0 each is a native bucket boundary, so the
// counts below them are exact).
func (st *state) familyBounds(f *expo.Family, o *Options) []float64 {
	if f.Observer == mapping.ObserverHistogram && len(f.Buckets) > 0 {
		return f.Buckets
	}
	if o.ClassicBounds != nil {
		return o.ClassicBounds
	}
	lo, hi := math.MaxInt, math.MinInt
	for i := range f.Samples {
		n := f.Samples[i].Native
		if len(n.PositiveSpans) == 0 {
			continue
		}
		first := n.PositiveSpans[0].Offset
		last := int32(-1)
		for _, sp := range n.PositiveSpans {
			last += sp.Offset + int32(sp.Length)
		}
		// Bucket i's upper bound 2^(i/2^s) rounded up to a power of two.
		lo = min(lo, ceilPow2(first, n.Schema))
		hi = max(hi, ceilPow2(last, n.Schema))
	}
	st.bounds = st.bounds[:0]
	for k := lo; k <= hi; k++ {
		st.bounds = append(st.bounds, math.Ldexp(1, k))
	}
	return st.bounds
}

// ceilPow2 is the smallest k with 2^k >= the upper bound of bucket i at
// schema s.
func ceilPow2(i, s int32) int {
	if s <= 0 {
		return int(i) << uint(-s)
	}
	// ceil(i / 2^s), for negative i too.
	d := int32(1) << s
	q := i / d
	if i%d != 0 && i > 0 {
		q++
	}
	return int(q)
}

// cumulative appends, for each bound, how many of n's values are <= it:
// the zero bucket (for bounds >= 0), every negative bucket lying wholly at
// or below the bound, and every positive bucket whose upper bound is at or
// below it. A native bucket straddling a bound counts above it.
func cumulative(dst []uint64, n *registry.NativeHistogram, bounds []float64) []uint64 {
	for range bounds {
		dst = append(dst, 0)
	}
	// Positive buckets ascend with the bounds: one merge pass.
	j := 0
	var run uint64
	idx := int32(0)
	k := 0
	for si, sp := range n.PositiveSpans {
		if si == 0 {
			idx = sp.Offset
		} else {
			idx += sp.Offset
		}
		for range sp.Length {
			ub := upperBound(idx, n.Schema)
			for j < len(bounds) && bounds[j] < ub {
				dst[j] = run
				j++
			}
			run += n.PositiveCounts[k]
			k++
			idx++
		}
	}
	for ; j < len(bounds); j++ {
		dst[j] = run
	}
	// The zero bucket and the negative buckets: all of them lie below any
	// bound >= 0; below a negative bound, only the buckets wholly under it.
	var neg uint64
	for _, c := range n.NegativeCounts {
		neg += c
	}
	for j, b := range bounds {
		if b >= 0 {
			dst[j] += n.ZeroCount + neg
			continue
		}
		dst[j] += negativeAtOrBelow(n, b)
	}
	return dst
}

// negativeAtOrBelow counts the negative buckets whose every value is <= b
// (b < 0): bucket i holds [-2^(i/2^s), -2^((i-1)/2^s)).
func negativeAtOrBelow(n *registry.NativeHistogram, b float64) uint64 {
	var c uint64
	idx := int32(0)
	k := 0
	for si, sp := range n.NegativeSpans {
		if si == 0 {
			idx = sp.Offset
		} else {
			idx += sp.Offset
		}
		for range sp.Length {
			if -upperBound(idx-1, n.Schema) <= b {
				c += n.NegativeCounts[k]
			}
			k++
			idx++
		}
	}
	return c
}
