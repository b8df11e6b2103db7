package registry

import "math"

// Bucket layout shared by Histogram, Timer and Sketch (log-linear, as in
// HDR histograms): a value's bucket is its IEEE 754 exponent plus the top
// subBits bits of its mantissa, read straight from the float's bits (no
// logarithm on the record path). Each power of two is split into 64 equal
// buckets, so a bucket spans at most 1/64 of its lower bound and its
// midpoint is within 1/128 (0.78%) of every value in it.
//
// Keys are signed: 0 is the zero bucket (|v| < 2^-64), 1..posBuckets hold
// positive values in increasing order, and -k mirrors k for negative values,
// so increasing keys are increasing values. Magnitudes at or above 2^64
// (1.8e19) share the last bucket; min and max stay exact regardless.
const (
	subBits    = 6
	subCount   = 1 << subBits
	expMin     = -64 // smallest exponent with buckets: 2^-64 ≈ 5.4e-20
	expMax     = 64  // first exponent without: 2^64 ≈ 1.8e19
	posBuckets = (expMax - expMin) * subCount
	biasedLow  = (1023 + expMin) << subBits
	mantShift  = 52 - subBits
)

// RelativeError is the largest relative error of a quantile within the
// bucketed range (|v| from 2^-64 to 2^64): half a bucket's width.
const RelativeError = 1.0 / (2 * subCount)

func bucketKey(v float64) int {
	b := math.Float64bits(v)
	p := int((b<<1)>>(mantShift+1)) - biasedLow
	if p < 0 {
		return 0
	}
	if p >= posBuckets {
		p = posBuckets - 1
	}
	if b>>63 != 0 {
		return -(p + 1)
	}
	return p + 1
}

// bucketValue returns the midpoint of bucket k, the value reported for a
// quantile that falls in it.
func bucketValue(k int) float64 {
	if k == 0 {
		return 0
	}
	neg := k < 0
	if neg {
		k = -k
	}
	bits := uint64(k-1+biasedLow)<<mantShift | 1<<(mantShift-1)
	v := math.Float64frombits(bits)
	if neg {
		return -v
	}
	return v
}

// Quantiles are the quantiles every histogram and timer reports, in the order
// of QuantileKeys.
var (
	Quantiles    = [NumQuantiles]float64{0.5, 0.75, 0.95, 0.98, 0.99, 0.999}
	QuantileKeys = [NumQuantiles]string{"q50", "q75", "q95", "q98", "q99", "q999"}
)

// NumQuantiles is len(Quantiles).
const NumQuantiles = 6

// Sketch is a mergeable summary of a set of values: exact count, min, max,
// mean and variance, and log-linear bucket counts giving every quantile
// within RelativeError. Merging two sketches gives exactly the sketch of the
// union of their values, so per-worker or per-window data can be combined
// without loss beyond the bucket resolution.
//
// The zero value is an empty sketch.
type Sketch struct {
	lo     int      // key of counts[0]
	counts []uint64 // dense over the keys seen
	n      uint64
	min    float64
	max    float64
	mean   float64
	m2     float64 // sum of squared deviations from mean
}

// Add records one value. NaN and ±Inf are ignored.
func (s *Sketch) Add(v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	s.addBucket(bucketKey(v), 1)
	s.mergeMoments(1, v, v, v, 0)
}

func (s *Sketch) addBucket(k int, c uint64) {
	if c == 0 {
		return
	}
	s.grow(k)
	s.counts[k-s.lo] += c
}

// mergeMoments folds n values with the given min, max, mean and squared
// deviation sum into s (Chan et al.'s parallel variance update).
func (s *Sketch) mergeMoments(n uint64, min, max, mean, m2 float64) {
	if n == 0 {
		return
	}
	if s.n == 0 {
		s.n, s.min, s.max, s.mean, s.m2 = n, min, max, mean, m2
		return
	}
	tot := float64(s.n + n)
	d := mean - s.mean
	s.mean += d * float64(n) / tot
	s.m2 += m2 + d*d*float64(s.n)*float64(n)/tot
	s.n += n
	s.min = math.Min(s.min, min)
	s.max = math.Max(s.max, max)
}

// Merge adds every value summarised by o to s.
func (s *Sketch) Merge(o *Sketch) {
	if o.n == 0 {
		return
	}
	s.addCounts(o.lo, o.counts)
	s.mergeMoments(o.n, o.min, o.max, o.mean, o.m2)
}

// addCounts adds dense bucket counts starting at key lo.
func (s *Sketch) addCounts(lo int, counts []uint64) {
	if len(counts) == 0 {
		return
	}
	s.grow(lo)
	s.grow(lo + len(counts) - 1)
	for i, c := range counts {
		s.counts[lo+i-s.lo] += c
	}
}

// grow makes key k addressable, reusing capacity so that a pooled sketch
// stops allocating once it has seen the widest range.
func (s *Sketch) grow(k int) {
	n := len(s.counts)
	switch {
	case n == 0:
		s.lo = k
		s.counts = append(s.counts[:0], 0)
	case k < s.lo:
		d := s.lo - k
		if cap(s.counts) >= n+d {
			s.counts = s.counts[:n+d]
			copy(s.counts[d:], s.counts[:n])
			clear(s.counts[:d])
		} else {
			grown := make([]uint64, n+d, 2*(n+d))
			copy(grown[d:], s.counts)
			s.counts = grown
		}
		s.lo = k
	case k >= s.lo+n:
		s.counts = append(s.counts, make([]uint64, k-s.lo-n+1)...)
	}
}

// reset empties s, keeping its memory.
func (s *Sketch) reset() {
	*s = Sketch{counts: s.counts[:0]}
}

// trim drops empty buckets at both ends.
func (s *Sketch) trim() {
	s.lo, s.counts = trim(s.lo, s.counts)
	if len(s.counts) == 0 {
		s.counts = nil
	}
}

func trim(lo int, c []uint64) (int, []uint64) {
	i, j := 0, len(c)
	for i < j && c[i] == 0 {
		i++
	}
	for j > i && c[j-1] == 0 {
		j--
	}
	return lo + i, c[i:j]
}

// Count returns the number of values.
func (s *Sketch) Count() uint64 { return s.n }

// Min returns the smallest value, or 0 when empty.
func (s *Sketch) Min() float64 { return s.min }

// Max returns the largest value, or 0 when empty.
func (s *Sketch) Max() float64 { return s.max }

// Mean returns the arithmetic mean, or 0 when empty.
func (s *Sketch) Mean() float64 { return s.mean }

// Stddev returns the sample standard deviation (n-1 in the denominator, as
// Dropwizard reports it), or 0 with fewer than two values.
func (s *Sketch) Stddev() float64 {
	if s.n < 2 || s.m2 <= 0 {
		return 0
	}
	return math.Sqrt(s.m2 / float64(s.n-1))
}

// Quantile returns the q-quantile (0 <= q <= 1) by the nearest-rank
// definition: the value of rank ceil(q*n) among the n values sorted
// ascending (rank 1 for q = 0), so [1,2,3,4] has q50 = 2 and q75 = 3. The
// value is the midpoint of that rank's bucket, within RelativeError of the
// true value, clamped to [Min, Max] so that the extremes are exact. An empty
// sketch returns 0.
func (s *Sketch) Quantile(q float64) float64 {
	var out [1]float64
	s.quantiles([]float64{q}, out[:])
	return out[0]
}

// quantiles fills out[i] with the qs[i]-quantile; qs must be ascending.
func (s *Sketch) quantiles(qs []float64, out []float64) {
	if s.n == 0 {
		clear(out)
		return
	}
	var cum uint64
	j := 0
	rank := nearestRank(qs[0], s.n)
	for i, c := range s.counts {
		cum += c
		for cum >= rank {
			out[j] = clamp(bucketValue(s.lo+i), s.min, s.max)
			if j++; j == len(qs) {
				return
			}
			rank = nearestRank(qs[j], s.n)
		}
	}
	for ; j < len(qs); j++ { // counts lagged the moments under concurrent writes
		out[j] = s.max
	}
}

func nearestRank(q float64, n uint64) uint64 {
	r := uint64(math.Ceil(q * float64(n)))
	if r < 1 {
		return 1
	}
	if r > n {
		return n
	}
	return r
}

func clamp(v, lo, hi float64) float64 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

// Bytes returns the memory held by the sketch's buckets.
func (s *Sketch) Bytes() int { return 8 * cap(s.counts) }
