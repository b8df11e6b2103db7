package registry

import (
	"math"
	"slices"
)

// Sparse bucket storage. Buckets are kept in blocks of blockLen counters
// (an eighth of a power of two at schema 6), allocated when a value first
// lands in them; a dense directory of 2-byte entries over the blocks' range
// finds them. Memory is ~4 bytes per bucket in use (8 in the cumulative
// counts) plus 2 bytes per eighth of an octave of range, so a histogram
// that saw 24 values in 24 octaves holds ~1 KiB and one fed ±1e-19..±1e19,
// every octave, ~12 KiB, where a dense array from the lowest to the highest
// bucket held 64 KiB.
//
// Caps: a store's directory spans at most maxDir blocks per sign (8192
// buckets: 128 octaves at schema 6), and a store holds at most maxBlocks
// blocks (4096 buckets). A value that would pass either makes the whole
// histogram lower its schema (see Histogram.shrink), so memory is bounded
// whatever the values.
const (
	blockBits = 3
	blockLen  = 1 << blockBits
	maxDir    = 1024
	maxBlocks = 512
)

type count interface{ ~uint32 | ~uint64 }

// span holds one sign's buckets.
type span[T count] struct {
	lo   int32    // block number of dir[0]
	dir  []uint16 // 1 + the block's position in pool, 0 when absent
	pool []T      // blockLen counts per block
}

// at returns bucket i's counter when its block exists.
func (s *span[T]) at(i int32) *T {
	d := uint32(i>>blockBits - s.lo)
	if d < uint32(len(s.dir)) {
		if n := s.dir[d]; n != 0 {
			return &s.pool[int(n-1)<<blockBits|int(i&(blockLen-1))]
		}
	}
	return nil
}

func (s *span[T]) blocks() int { return len(s.pool) >> blockBits }

// alloc adds bucket i's block and returns its counter, or nil when limit
// is set and the directory would span more than maxDir blocks.
func (s *span[T]) alloc(i int32, limit bool) *T {
	b := i >> blockBits
	if len(s.dir) == 0 {
		s.dir = append(s.dir[:0], 0)
		s.lo = b
	} else if d := b - s.lo; d < 0 || int(d) >= len(s.dir) {
		lo, hi := min(s.lo, b), max(s.lo+int32(len(s.dir))-1, b)
		if limit && hi-lo+1 > maxDir {
			if !s.tighten(b) {
				return nil
			}
			return s.alloc(i, limit)
		}
		// Headroom on the growing side (an octave, or a quarter of the
		// range) so that a range widening one block at a time does not
		// copy every time.
		pad := max(int32(8), (hi-lo+1)/4)
		if limit {
			pad = min(pad, maxDir-(hi-lo+1))
		}
		if b < s.lo {
			lo -= pad
		} else {
			hi += pad
		}
		s.redir(lo, hi)
	}
	d := b - s.lo
	if len(s.pool) == cap(s.pool) {
		// ~1/8 headroom instead of append's doubling: Bytes is what the
		// blocks in use cost, within 12%.
		s.pool = slices.Grow(s.pool, max(blockLen, len(s.pool)/8/blockLen*blockLen))
	}
	s.pool = s.pool[:len(s.pool)+blockLen]
	clear(s.pool[len(s.pool)-blockLen:]) // capacity kept by reset holds old counts
	s.dir[d] = uint16(s.blocks())
	return &s.pool[len(s.pool)-blockLen+int(i&(blockLen-1))]
}

// redir re-lays the directory over blocks lo..hi (which must include every
// block in use).
func (s *span[T]) redir(lo, hi int32) {
	n := int(hi - lo + 1)
	if n <= cap(s.dir) && lo <= s.lo && int(s.lo-lo)+len(s.dir) <= n {
		// Widening in place: a pooled sketch stops allocating.
		old := len(s.dir)
		s.dir = s.dir[:n]
		off := int(s.lo - lo)
		copy(s.dir[off:], s.dir[:old])
		clear(s.dir[:off])
		clear(s.dir[off+old:])
		s.lo = lo
		return
	}
	nd := slices.Grow([]uint16(nil), n)
	nd = nd[:n]
	for d, p := range s.dir {
		if p != 0 {
			nd[s.lo+int32(d)-lo] = p
		}
	}
	s.dir, s.lo = nd, lo
}

// tighten shrinks the directory to the blocks in use plus b, if that spans
// at most maxDir: a directory keeps the range of every value it saw since
// it was last emptied, which may be wider than its blocks.
func (s *span[T]) tighten(b int32) bool {
	lo, hi := b, b
	for d, n := range s.dir {
		if n != 0 {
			lo, hi = min(lo, s.lo+int32(d)), max(hi, s.lo+int32(d))
		}
	}
	if hi-lo+1 > maxDir || hi-lo+1 >= int32(len(s.dir)) {
		return false
	}
	s.redir(lo, hi)
	return true
}

// reset empties the span, keeping its memory for the next half-window.
func (s *span[T]) reset() {
	s.dir = s.dir[:0]
	s.pool = s.pool[:0]
}

// block returns block b's counters, allocating it (without the caps).
func (s *span[T]) block(b int32) []T {
	d := uint32(b - s.lo)
	if d >= uint32(len(s.dir)) || s.dir[d] == 0 {
		s.alloc(b<<blockBits, false)
		d = uint32(b - s.lo)
	}
	return s.pool[int(s.dir[d]-1)<<blockBits:][:blockLen]
}

// addSpan adds src's counts to dst (same schema), a block at a time.
func addSpan[S, D count](dst *span[D], src *span[S]) {
	if len(dst.pool) == 0 {
		// An empty destination (a snapshot's first half-window): copy the
		// directory and convert the counts in one pass, instead of
		// finding and allocating block by block.
		dst.lo = src.lo
		dst.dir = append(dst.dir[:0], src.dir...)
		dp := slices.Grow(dst.pool[:0], len(src.pool))[:len(src.pool)]
		for i, c := range src.pool {
			dp[i] = D(c)
		}
		dst.pool = dp
		return
	}
	for d, p := range src.dir {
		if p == 0 {
			continue
		}
		from := (*[blockLen]S)(src.pool[int(p-1)<<blockBits:])
		b := src.lo + int32(d)
		var to *[blockLen]D
		if k := uint(uint32(b - dst.lo)); k < uint(len(dst.dir)) && dst.dir[k] != 0 {
			to = (*[blockLen]D)(dst.pool[int(dst.dir[k]-1)<<blockBits:])
		} else {
			to = (*[blockLen]D)(dst.block(b))
		}
		for x, c := range from {
			to[x] += D(c)
		}
	}
}

// iter walks a span's non-zero buckets in increasing index order
// (decreasing when rev is set) without allocating.
type iter[T count] struct {
	s   *span[T]
	rev bool
	k   int // directory position, counted from the walk's start
	x   int // bucket within the block
}

func (it *iter[T]) next() (i int32, c T, ok bool) {
	s := it.s
	n := len(s.dir)
	for ; it.k < n; it.k, it.x = it.k+1, 0 {
		d := it.k
		if it.rev {
			d = n - 1 - d
		}
		p := s.dir[d]
		if p == 0 {
			continue
		}
		blk := s.pool[int(p-1)<<blockBits:][:blockLen]
		for ; it.x < blockLen; it.x++ {
			x := it.x
			if it.rev {
				x = blockLen - 1 - x
			}
			if c = blk[x]; c != 0 {
				it.x++
				return (s.lo+int32(d))<<blockBits + int32(x), c, true
			}
		}
	}
	return 0, 0, false
}

func (s *span[T]) bytes() int {
	var t T
	return 2*cap(s.dir) + int(sizeof(t))*cap(s.pool)
}

func sizeof[T count](t T) uintptr {
	if uint64(^T(0)) == math.MaxUint32 {
		return 4
	}
	return 8
}

// wstore is a half-window's buckets: uint32 counts, half the memory of
// uint64s; a bucket that reaches 2^32 within a half-window (4 billion
// values in minutes) spills 2^32 at a time into over.
type wstore struct {
	pos, neg span[uint32]
	zero     uint64
	over     map[int64]uint64 // overKey -> counts beyond the uint32s
}

func overKey(i int32, neg bool) int64 {
	k := int64(i) << 1
	if neg {
		k |= 1
	}
	return k
}

// add counts the value whose bits are b (finite) at schema; false when its
// bucket would pass a cap, and then nothing was counted.
func (w *wstore) add(b uint64, schema int32, n uint32) bool {
	ab := b &^ (1 << 63)
	if ab <= zeroThresholdBits {
		w.zero += uint64(n)
		return true
	}
	d := MaxSchema - schema
	i := (index6(ab) + (1 << d) - 1) >> d
	sp := &w.pos
	if b != ab {
		sp = &w.neg
	}
	c := sp.at(i)
	if c == nil {
		if w.pos.blocks()+w.neg.blocks() >= maxBlocks {
			return false
		}
		if c = sp.alloc(i, true); c == nil {
			return false
		}
	}
	if x := *c + n; x >= *c {
		*c = x
		return true
	}
	w.spill(i, b != ab, c, n)
	return true
}

// addMany counts the finite values of vs at schema (d = MaxSchema-schema,
// adj = 2^d-1) and returns how many it took (all, unless a value's bucket
// would pass a cap) and how many of those it ignored as NaN or ±Inf.
//
// It is the loop every recorded value goes through (a ring's drain,
// UpdateMany), so its common case is written out for schema 6: a normal
// value whose block exists and whose count does not overflow, with the
// spans' headers in registers (reloaded only after the slow path, the one
// call that may change them) and one comparison for "zero, NaN or ±Inf".
func (w *wstore) addMany(vs []float64, schema, d, adj int32) (done, bad int) {
	if d != 0 {
		return w.addManyAt(vs, schema, d, adj)
	}
	for i := 0; i < len(vs); i++ {
		b := math.Float64bits(vs[i])
		// e-896 < 2047-896 is 896 <= e < 2047 (unsigned): above the
		// zero bucket (|v| >= 2^-127; 2^-128 < |v| < 2^-127 take the slow
		// path) and finite, with small constants.
		if e := b >> 52 & 0x7ff; e-896 < 2047-896 {
			// j, plus 1 when m is above the slice's boundary: the sign bit
			// of boundary-m (both < 2^52), not a branch, which random
			// values would mispredict often.
			k := b >> (52 - 7) & 127
			m := b & mantMask
			idx := int32(e-1023)<<6 + mantJ[k] + int32((mantBound[k]-m)>>63)
			sp := &w.pos
			if int64(b) < 0 {
				sp = &w.neg
			}
			if d := uint(uint32(idx>>blockBits - sp.lo)); d < uint(len(sp.dir)) {
				if x := sp.dir[d]; x != 0 {
					p := &sp.pool[int(x-1)<<blockBits|int(idx&(blockLen-1))]
					if *p != math.MaxUint32 {
						*p++
						continue
					}
				}
			}
		}
		// Only i is live into the slow path: the compiler keeps fewer
		// values on the stack on the fast one.
		switch w.addSlow(vs[i], schema) {
		case slowBad:
			bad++
		case slowCap:
			return i, bad
		}
	}
	return len(vs), bad
}

const (
	slowOK  = iota
	slowBad // NaN or ±Inf: ignored
	slowCap // not counted: its bucket would pass a cap
)

// addSlow counts v at schema, allocating its block; addMany calls it
// for what its fast path does not count.
func (w *wstore) addSlow(v float64, schema int32) int {
	if v-v != 0 {
		return slowBad
	}
	if !w.add(math.Float64bits(v), schema, 1) {
		return slowCap
	}
	return slowOK
}

// addManyAt is addMany below schema 6.
func (w *wstore) addManyAt(vs []float64, schema, d, adj int32) (done, bad int) {
	pos, neg := &w.pos, &w.neg
	for i, v := range vs {
		if v-v != 0 { // NaN or ±Inf
			bad++
			continue
		}
		b := math.Float64bits(v)
		ab := b &^ (1 << 63)
		if ab <= zeroThresholdBits {
			w.zero++
			continue
		}
		idx := (index6(ab) + adj) >> d
		sp := pos
		if b != ab {
			sp = neg
		}
		if c := sp.at(idx); c != nil && *c != math.MaxUint32 {
			*c++
			continue
		}
		if !w.add(b, schema, 1) {
			return i, bad
		}
	}
	return len(vs), bad
}

func (w *wstore) spill(i int32, neg bool, c *uint32, n uint32) {
	if w.over == nil {
		w.over = map[int64]uint64{}
	}
	t := uint64(*c) + uint64(n)
	w.over[overKey(i, neg)] += t &^ math.MaxUint32
	*c = uint32(t)
}

func (w *wstore) reset() {
	w.pos.reset()
	w.neg.reset()
	w.zero = 0
	w.over = nil
}

func (w *wstore) bytes() int {
	return w.pos.bytes() + w.neg.bytes() + 48*len(w.over)
}

// cstore holds counts since creation (the cumulative part of retired
// half-windows) or a snapshot's merged counts: uint64s, no cap of its own
// (its owner checks capped()).
type cstore struct {
	pos, neg span[uint64]
	zero     uint64
}

func (c *cstore) addBucket(i int32, neg bool, n uint64) {
	sp := &c.pos
	if neg {
		sp = &c.neg
	}
	p := sp.at(i)
	if p == nil {
		p = sp.alloc(i, false)
	}
	*p += n
}

// addW adds a half-window's counts, which are at the same schema.
func (c *cstore) addW(w *wstore) {
	c.zero += w.zero
	addSpan(&c.pos, &w.pos)
	addSpan(&c.neg, &w.neg)
	for k, n := range w.over {
		c.addBucket(int32(k>>1), k&1 != 0, n)
	}
}

func (c *cstore) addC(o *cstore) {
	c.zero += o.zero
	addSpan(&c.pos, &o.pos)
	addSpan(&c.neg, &o.neg)
}

// addCDown adds o's counts, d schemas finer than c's, lowering them to c's.
func (c *cstore) addCDown(o *cstore, d int32) {
	c.zero += o.zero
	for k, sp := range [2]*span[uint64]{&o.pos, &o.neg} {
		for it := (iter[uint64]{s: sp}); ; {
			i, n, ok := it.next()
			if !ok {
				break
			}
			c.addBucket(downIndex(i, d), k == 1, n)
		}
	}
}

// capped reports whether the store passed a cap and its histogram should
// lower its schema.
func (c *cstore) capped() bool {
	return c.pos.blocks()+c.neg.blocks() > maxBlocks || len(c.pos.dir) > maxDir || len(c.neg.dir) > maxDir
}

func (c *cstore) reset() {
	c.pos.reset()
	c.neg.reset()
	c.zero = 0
}

func (c *cstore) bytes() int { return c.pos.bytes() + c.neg.bytes() }

// downscale lowers the schema of the store's buckets by d.
func (c *cstore) downscale(d int32) {
	if d <= 0 {
		return
	}
	var t cstore
	t.addCDown(c, d)
	c.pos, c.neg = t.pos, t.neg
}

// downscale lowers the schema of a half-window's buckets by d; it cannot
// pass the caps, which it met at the higher schema.
func (w *wstore) downscale(d int32) {
	var t wstore
	t.zero = w.zero
	move := func(neg bool) func(i int32, n uint32) {
		return func(i int32, n uint32) {
			j := downIndex(i, d)
			sp := &t.pos
			if neg {
				sp = &t.neg
			}
			p := sp.at(j)
			if p == nil {
				p = sp.alloc(j, false)
			}
			if x := *p + n; x >= *p {
				*p = x
			} else {
				t.spill(j, neg, p, n)
			}
		}
	}
	for k, sp := range [2]*span[uint32]{&w.pos, &w.neg} {
		f := move(k == 1)
		for it := (iter[uint32]{s: sp}); ; {
			i, n, ok := it.next()
			if !ok {
				break
			}
			f(i, n)
		}
	}
	for k, n := range w.over {
		if t.over == nil {
			t.over = map[int64]uint64{}
		}
		t.over[overKey(downIndex(int32(k>>1), d), k&1 != 0)] += n
	}
	*w = t
}
