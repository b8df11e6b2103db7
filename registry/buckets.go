package registry

import "math"

// The bucket layout is the one Prometheus native histograms and OTLP
// exponential histograms share, so that the fleet's exports are exact
// copies, not re-bucketed approximations. At schema s the base is
// 2^(2^-s), and bucket i holds the magnitudes in (base^(i-1), base^i]
// (upper bound inclusive, Prometheus' index; OTLP's index is i-1). Values
// with |v| <= ZeroThreshold count in the zero bucket; negative values use
// their own buckets, indexed by magnitude.
//
// A histogram starts at MaxSchema (64 buckets per power of two) and lowers
// its schema (halving its resolution, merging each pair of buckets) only
// when its buckets would pass the caps below; see docs/core.md.
const (
	// MaxSchema is the schema every histogram and sketch starts at.
	MaxSchema = 6
	// MinSchema is the lowest schema Prometheus defines (base 2^16);
	// there the whole float64 range is 132 buckets per sign.
	MinSchema = -4

	// ZeroThreshold is the width of the zero bucket, Prometheus' default
	// (2^-128): values with |v| <= ZeroThreshold count as zero.
	ZeroThreshold = 0x1p-128

	zeroThresholdBits = (1023 - 128) << 52
)

// RelativeError is the largest relative error of a reported quantile at
// MaxSchema: a bucket's midpoint is within (b-1)/(b+1) of every value in
// it, b = 2^(1/64), i.e. 0.5415%. A histogram whose buckets passed the cap
// reports within RelativeErrorAt(its Schema()).
const RelativeError = 0.005415

// RelativeErrorAt returns the quantile error bound at schema s.
func RelativeErrorAt(s int32) float64 {
	b := math.Exp2(math.Ldexp(1, -int(s)))
	return (b - 1) / (b + 1)
}

// mantTable maps the top 7 mantissa bits of a value in [1, 2) to its
// schema-6 sub-bucket: each of the 128 equal slices of [1, 2) is narrower
// than the narrowest bucket (2^(1/64)-1 = 1.09% of its lower bound), so it
// holds at most one boundary, and one comparison against it finishes the
// lookup. Entry: the sub-bucket j of the slice's lowest mantissa in the top
// 7 bits, and the mantissa of 2^(j/64) (the largest in sub-bucket j) below.
var mantTable = func() (t [128]uint64) {
	var bound [65]uint64
	for j := range bound {
		bound[j] = math.Float64bits(math.Exp2(float64(j)/64)) & mantMask
	}
	bound[64] = mantMask // no mantissa is above it
	for k := range t {
		lo := uint64(k) << (52 - 7)
		j := 0
		for bound[j] < lo {
			j++
		}
		t[k] = uint64(j)<<57 | bound[j]
	}
	return t
}()

const mantMask = 1<<52 - 1

// index6 returns the schema-6 bucket of a magnitude given by its float bits
// (sign cleared), above ZeroThreshold and finite: exponent<<6 plus the
// sub-bucket j with 2^((j-1)/64) < mantissa <= 2^(j/64). No logarithm.
func index6(ab uint64) int32 {
	m := ab & mantMask
	t := mantTable[m>>(52-7)]
	j := int32(t >> 57)
	if m > t&mantMask {
		j++
	}
	return (int32(ab>>52)-1023)<<6 + j
}

// downIndex maps a schema-s bucket to its bucket at schema s-d: bucket j
// there holds the buckets (j-1)*2^d+1 .. j*2^d, so j = ceil(i/2^d).
func downIndex(i int32, d int32) int32 { return (i + (1 << d) - 1) >> d }

// bucketBounds returns the bucket's magnitude bounds (lower exclusive).
func bucketBounds(i, schema int32) (lo, hi float64) {
	w := math.Ldexp(1, -int(schema))
	return math.Exp2(float64(i-1) * w), math.Exp2(float64(i) * w)
}

// bucketMid is the value reported for a quantile in bucket i of the given
// sign (neg) at schema: the middle of its bounds.
func bucketMid(i, schema int32, neg bool) float64 {
	lo, hi := bucketBounds(i, schema)
	v := lo + (hi-lo)/2
	if neg {
		return -v
	}
	return v
}
