package registry

import "math"

// Quantiles are the quantiles every histogram and timer reports, in the order
// of QuantileKeys.
var (
	Quantiles    = [NumQuantiles]float64{0.5, 0.75, 0.95, 0.98, 0.99, 0.999}
	QuantileKeys = [NumQuantiles]string{"q50", "q75", "q95", "q98", "q99", "q999"}
)

// NumQuantiles is len(Quantiles).
const NumQuantiles = 6

// Sketch is a mergeable summary of a set of values: exact count, min, max,
// mean and variance, and sparse bucket counts in the native-histogram
// layout (see MaxSchema) giving every quantile within
// RelativeErrorAt(Schema()). Merging two sketches gives exactly the sketch
// of the union of their values (at the lower of their schemas), so
// per-worker or per-window data can be combined without loss beyond the
// bucket resolution.
//
// The zero value is an empty sketch at MaxSchema.
type Sketch struct {
	schema int32 // MaxSchema - schema, so that the zero value is at MaxSchema
	b      cstore
	n      uint64
	min    float64
	max    float64
	mean   float64
	m2     float64 // sum of squared deviations from mean
}

// Schema returns the sketch's bucket schema.
func (s *Sketch) Schema() int32 { return MaxSchema - s.schema }

// Add records one value. NaN and ±Inf are ignored.
func (s *Sketch) Add(v float64) {
	if v-v != 0 {
		return
	}
	b := math.Float64bits(v)
	if ab := b &^ (1 << 63); ab <= zeroThresholdBits {
		s.b.zero++
	} else {
		d := s.schema
		s.b.addBucket((index6(ab)+(1<<d)-1)>>d, b != ab, 1)
		for s.b.capped() && s.schema < MaxSchema-MinSchema {
			s.b.downscale(1)
			s.schema++
		}
	}
	s.mergeMoments(1, v, v, v, 0)
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

// Merge adds every value summarised by o to s. If o has a lower schema, s
// is lowered to it first.
func (s *Sketch) Merge(o *Sketch) {
	if o.n == 0 {
		return
	}
	s.lower(o.schema)
	if o.schema == s.schema {
		s.b.addC(&o.b)
	} else {
		s.b.addCDown(&o.b, s.schema-o.schema)
	}
	s.mergeMoments(o.n, o.min, o.max, o.mean, o.m2)
}

// lower takes s down to the schema MaxSchema-to if it is above it.
func (s *Sketch) lower(to int32) {
	if to > s.schema {
		s.b.downscale(to - s.schema)
		s.schema = to
	}
}

// reset empties s at schema MaxSchema-schema, keeping its memory.
func (s *Sketch) reset(schema int32) {
	s.b.reset()
	s.schema = MaxSchema - schema
	s.n, s.min, s.max, s.mean, s.m2 = 0, 0, 0, 0, 0
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
// value is the midpoint of that rank's bucket, within
// RelativeErrorAt(Schema()) of the true value, clamped to [Min, Max] so
// that the extremes are exact. An empty sketch returns 0.
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
	st := qstate{qs: qs, out: out, n: s.n, lo: s.min, hi: s.max, schema: s.Schema()}
	st.rank = nearestRank(qs[0], s.n)
	if walk(&st, &s.b.neg, true) && st.visit(s.b.zero, 0, false, true) {
		walk(&st, &s.b.pos, false)
	}
	for ; st.j < len(qs); st.j++ { // counts lagged the moments
		out[st.j] = s.max
	}
}

// windowQuantiles is quantiles for a sketch whose buckets are exactly one
// half-window's (the common case of a read): the window is walked where it
// is, without merging it into the sketch first. The caller holds its lock.
func (s *Sketch) windowQuantiles(w *wstore, qs []float64, out []float64) {
	if s.n == 0 || len(w.over) != 0 { // spilled counts: merge as usual
		s.b.addW(w)
		s.quantiles(qs, out)
		return
	}
	st := qstate{qs: qs, out: out, n: s.n, lo: s.min, hi: s.max, schema: s.Schema()}
	st.rank = nearestRank(qs[0], s.n)
	if walk(&st, &w.neg, true) && st.visit(w.zero, 0, false, true) {
		walk(&st, &w.pos, false)
	}
	for ; st.j < len(qs); st.j++ {
		out[st.j] = s.max
	}
}

// qstate is the walk of quantiles over buckets in ascending value order.
type qstate struct {
	qs, out []float64
	j       int
	cum     uint64
	rank, n uint64
	lo, hi  float64
	schema  int32
}

// visit adds bucket i's count c; false once every quantile is found.
func (q *qstate) visit(c uint64, i int32, neg, zero bool) bool {
	q.cum += c
	for q.cum >= q.rank {
		v := 0.0
		if !zero {
			v = bucketMid(i, q.schema, neg)
		}
		q.out[q.j] = clamp(v, q.lo, q.hi)
		if q.j++; q.j == len(q.qs) {
			return false
		}
		q.rank = nearestRank(q.qs[q.j], q.n)
	}
	return true
}

// walk visits a span's buckets in ascending value order: for negative
// values (neg) that is descending index. A block whose total leaves the
// next rank unreached is skipped in one step.
func walk[T count](q *qstate, s *span[T], neg bool) bool {
	n := len(s.dir)
	for k := range n {
		d := k
		if neg {
			d = n - 1 - k
		}
		p := s.dir[d]
		if p == 0 {
			continue
		}
		blk := s.pool[int(p-1)<<blockBits:][:blockLen]
		var tot uint64
		for _, c := range blk {
			tot += uint64(c)
		}
		if q.cum+tot < q.rank {
			q.cum += tot
			continue
		}
		base := (s.lo + int32(d)) << blockBits
		for x := range blockLen {
			if neg {
				x = blockLen - 1 - x
			}
			if c := uint64(blk[x]); c != 0 && !q.visit(c, base+int32(x), neg, false) {
				return false
			}
		}
	}
	return true
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
func (s *Sketch) Bytes() int { return s.b.bytes() }
