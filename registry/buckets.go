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
	infBits           = 0x7ff << 52 // +Inf; NaNs are above
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
	copy(bound[:], boundMant[:])
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

// boundMant[j] is the mantissa of the float64 nearest to 2^(j/64), the
// bucket boundaries Prometheus compares against (math.Exp2 is off by one
// ulp at nine of them; TestIndexIsPrometheusSchema6 recomputes them
// exactly).
var boundMant = [64]uint64{
	0x0000000000000, 0x02c9a3e778061, 0x059b0d3158574, 0x0874518759bc8,
	0x0b5586cf9890f, 0x0e3ec32d3d1a2, 0x11301d0125b51, 0x1429aaea92de0,
	0x172b83c7d517b, 0x1a35beb6fcb75, 0x1d4873168b9aa, 0x2063b88628cd6,
	0x2387a6e756238, 0x26b4565e27cdd, 0x29e9df51fdee1, 0x2d285a6e4030b,
	0x306fe0a31b715, 0x33c08b26416ff, 0x371a7373aa9cb, 0x3a7db34e59ff7,
	0x3dea64c123422, 0x4160a21f72e2a, 0x44e086061892d, 0x486a2b5c13cd0,
	0x4bfdad5362a27, 0x4f9b2769d2ca7, 0x5342b569d4f82, 0x56f4736b527da,
	0x5ab07dd485429, 0x5e76f15ad2148, 0x6247eb03a5585, 0x6623882552225,
	0x6a09e667f3bcd, 0x6dfb23c651a2f, 0x71f75e8ec5f74, 0x75feb564267c9,
	0x7a11473eb0187, 0x7e2f336cf4e62, 0x82589994cce13, 0x868d99b4492ed,
	0x8ace5422aa0db, 0x8f1ae99157736, 0x93737b0cdc5e5, 0x97d829fde4e50,
	0x9c49182a3f090, 0xa0c667b5de565, 0xa5503b23e255d, 0xa9e6b5579fdbf,
	0xae89f995ad3ad, 0xb33a2b84f15fb, 0xb7f76f2fb5e47, 0xbcc1e904bc1d2,
	0xc199bdd85529c, 0xc67f12e57d14b, 0xcb720dcef9069, 0xd072d4a07897c,
	0xd5818dcfba487, 0xda9e603db3285, 0xdfc97337b9b5f, 0xe502ee78b3ff6,
	0xea4afa2a490da, 0xefa1bee615a27, 0xf50765b6e4540, 0xfa7c1819e90d8,
}

const mantMask = 1<<52 - 1

// mantJ and mantBound are mantTable's two halves, for the drain's loop
// (wstore.addMany): two loads instead of a load and two masks.
var mantJ, mantBound = func() (j [128]int32, b [128]uint64) {
	for k, t := range mantTable {
		j[k], b[k] = int32(t>>57), t&mantMask
	}
	return j, b
}()

// midMant[r] is the middle of (2^(r/64), 2^((r+1)/64)], the schema-6
// bucket 64e+r+1 divided by 2^e.
var midMant = func() (m [64]float64) {
	for r := range m {
		lo, hi := bucketBounds(int32(r+1), MaxSchema)
		m[r] = lo + (hi-lo)/2
	}
	return m
}()

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
	var v float64
	if e := (i - 1) >> 6; schema == MaxSchema && e > -1022 && e < 1023 {
		// Schema 6 (every read of a histogram under the cap): a table and
		// a power of two, not two math.Exp2 calls per quantile.
		v = midMant[(i-1)&63] * math.Float64frombits(uint64(e+1023)<<52)
	} else {
		lo, hi := bucketBounds(i, schema)
		v = lo + (hi-lo)/2
	}
	if neg {
		return -v
	}
	return v
}
