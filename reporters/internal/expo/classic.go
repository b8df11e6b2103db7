package expo

import (
	"math"

	"github.com/tapes-go/tapes/registry"
)

// Classic buckets from native ones, the one rule every output that writes
// _bucket series follows (the scrape formats and remote write).

// ClassicBounds are the classic upper bounds derived for a family whose
// samples hold the native histograms ns: every power of two (at schemas
// below 0, every boundary of the lowest schema, a power of 2^(2^-schema))
// from the lowest positive bucket any sample uses to the highest. Each is
// a native bucket boundary at every sample's schema, so every count below
// it is exact, and hosts whose values span the same range write the same
// bounds. Nil when no sample holds a positive value.
func ClassicBounds(ns []*registry.NativeHistogram) []float64 {
	schema := int32(math.MaxInt32)
	for _, n := range ns {
		if len(n.PositiveSpans) > 0 {
			schema = min(schema, n.Schema)
		}
	}
	if schema == math.MaxInt32 {
		return nil
	}
	// Classic bound k is base^k: native index k*step at the sample's
	// schema (step = 2^(schema-lowest)).
	base := math.Exp2(math.Exp2(float64(-min(schema, 0))))
	lo, hi := int32(math.MaxInt32), int32(math.MinInt32)
	for _, n := range ns {
		if len(n.PositiveSpans) == 0 {
			continue
		}
		step := int32(1) << (n.Schema - min(schema, 0))
		first := n.PositiveSpans[0].Offset
		last := first - 1
		for i, sp := range n.PositiveSpans {
			if i > 0 {
				last += sp.Offset
			}
			last += int32(sp.Length)
		}
		// Bucket i holds (b^(i-1), b^i]: its classic bound is ceil(i/step).
		lo, hi = min(lo, ceilDiv(first, step)), max(hi, ceilDiv(last, step))
	}
	les := make([]float64, 0, hi-lo+1)
	for k := lo; k <= hi; k++ {
		les = append(les, math.Pow(base, float64(k)))
	}
	return les
}

func ceilDiv(a, b int32) int32 {
	q := a / b
	if a%b != 0 && (a > 0) == (b > 0) {
		q++
	}
	return q
}

// ClassicCounts appends to dst n's cumulative counts at the bounds les
// (ascending, finite), then at +Inf (n.Count): at each bound, the values
// of the native buckets lying wholly at or below it, so a bound inside a
// native bucket counts that bucket above it, and the zero bucket
// (|v| <= ZeroThreshold) counts at bounds from ZeroThreshold up.
func ClassicCounts(dst []uint64, n *registry.NativeHistogram, les []float64) []uint64 {
	base := len(dst)
	for range les {
		dst = append(dst, 0)
	}
	out := dst[base:]
	// Positive buckets ascend with the bounds: one merge pass.
	j, k := 0, 0
	var run uint64
	idx := int32(0)
	for _, sp := range n.PositiveSpans {
		idx += sp.Offset
		for range sp.Length {
			ub := bucketBound(idx, n.Schema)
			for j < len(les) && les[j] < ub {
				out[j] = run
				j++
			}
			run += n.PositiveCounts[k]
			k++
			idx++
		}
	}
	for ; j < len(les); j++ {
		out[j] = run
	}
	var neg uint64
	for _, c := range n.NegativeCounts {
		neg += c
	}
	for j, b := range les {
		if b >= n.ZeroThreshold {
			out[j] += n.ZeroCount
		}
		if b >= 0 {
			out[j] += neg
		} else {
			out[j] += negativeAtOrBelow(n, b)
		}
	}
	return append(dst, n.Count)
}

// negativeAtOrBelow counts the negative buckets whose every value is <= b
// (b < 0): bucket i holds [-b^i, -b^(i-1)).
func negativeAtOrBelow(n *registry.NativeHistogram, b float64) uint64 {
	var c uint64
	idx := int32(0)
	k := 0
	for _, sp := range n.NegativeSpans {
		idx += sp.Offset
		for range sp.Length {
			if -bucketBound(idx-1, n.Schema) <= b {
				c += n.NegativeCounts[k]
			}
			k++
			idx++
		}
	}
	return c
}

// bucketBound is base^i at schema s, exact at powers of two.
func bucketBound(i, s int32) float64 {
	if s <= 0 {
		return math.Ldexp(1, int(i)<<uint(-s))
	}
	if i%(1<<s) == 0 {
		return math.Ldexp(1, int(i>>s))
	}
	return math.Exp2(float64(i) / float64(int32(1)<<s))
}
