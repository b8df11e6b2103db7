package registry

import (
	"maps"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Histogram summarises a stream of float64 values: a cumulative count and
// sum, and min, max, mean, standard deviation and quantiles over a recent
// window.
//
// Stats leaf:
//
//	{"count": 1000, "min": 0.2, "max": 9.7, "mean": 1.1, "stddev": 0.8,
//	 "q50": 0.9, "q75": 1.4, "q95": 2.8, "q98": 3.9, "q99": 4.6, "q999": 8.8}
//
// The zero value is a usable histogram with the default 5-minute window.
//
// Quantiles come from log-linear buckets (see Sketch): within 0.78% of the
// nearest-rank quantile for |values| from 2^-64 to 2^64, whatever the
// distribution. Count, sum, mean, min, max and stddev are exact (up to
// float64 rounding). NaN and ±Inf are ignored (not counted). Values are kept in
// two half-windows; what is reported covers the last window/2 to window of
// time, and once a whole window passes without events everything but count
// reads 0, so values neither freeze nor go stale.
//
// Performance tip: each P (GOMAXPROCS slot) that records gets its own shard,
// written only by that P with plain stores, so Update
// scales across cores without contended cache lines. Memory grows with the
// number of Ps that recorded and the range of values seen: about 512 bytes
// per power of two of range per shard (a timer that saw 1 µs to 10 s holds
// ~13 KiB per P that recorded, see Bytes) and never with the number of
// observations.
type Histogram struct {
	clock  Clock
	window time.Duration

	epoch  atomic.Int64 // current half-window number (>= 1); 0 before first use
	shards atomic.Pointer[[]*hshard]
	mu     sync.Mutex // guards shard creation
}

// hshard is one P's part of a histogram. Only the goroutine that has that P
// pinned writes it, so every field is updated with a load and a store, no
// read-modify-write, and the stores on the record path are plain ones (see
// stRelaxed): a Go atomic store on amd64 is a locked XCHG, which made three
// of them the bulk of the record cost. The window count is the sum of the
// buckets; the cumulative count and sum are the retired half-windows plus
// the live ones, so neither costs a store per event.
type hshard struct {
	_      [64]byte // keep other allocations off the written lines
	win    [2]hwindow
	retN   atomic.Uint64 // values of the half-windows reset so far
	retSum atomic.Uint64 // float64 bits: their sum
	spills atomic.Uint64 // sequence lock around spill: odd while one runs
	_      [64]byte
}

// Half-window states besides its epoch number.
const (
	epochUnused    = 0
	epochResetting = -1
)

// hwindow is one half-window of one shard. Readers use epoch as a sequence
// lock around reset: it is epochResetting while the writer retires and
// clears the half-window, and never takes the same positive value twice.
type hwindow struct {
	epoch atomic.Int64
	shift atomic.Uint64 // float64 bits: first value (NaN before it), subtracted from sum for precision
	sum   atomic.Uint64 // float64 bits: Σ(v-shift)
	sumsq atomic.Uint64 // float64 bits: Σ(v-shift)², for an exact variance
	min   atomic.Uint64 // float64 bits: +Inf when empty
	max   atomic.Uint64 // float64 bits: -Inf when empty
	b     atomic.Pointer[buckets]
	over  atomic.Pointer[map[int]uint64] // bucket key -> counts past the uint32 (see spill)
}

// buckets holds a half-window's counts as uint32s: half the memory of
// uint64s, which keeps a timer that saw 1 µs to 10 s under 32 KiB with two
// Ps recording. A bucket that reaches 2^32 in one half-window (4 billion
// values on one P within minutes) spills into hwindow.over.
type buckets struct {
	lo int
	c  []atomic.Uint32
}

func ld(a *atomic.Uint64) float64    { return math.Float64frombits(a.Load()) }
func st(a *atomic.Uint64, v float64) { a.Store(math.Float64bits(v)) }

// Update records v.
func (h *Histogram) Update(v float64) {
	if v-v != 0 { // NaN or ±Inf
		return
	}
	h.record(v, nil)
}

// record is the whole record path of Histogram.Update and Timer.Update
// (which passes its rates to tick). It calls nanosOf and epochAt only when
// their inlinable fast paths say so: the compiler inlines neither, and the
// calls cost ~3 ns of a 16 ns Timer.Update (15.9 -> 13.2 ns when the fast
// paths were added).
func (h *Histogram) record(v float64, r *rates) {
	// begin, written out: the compiler does not inline it, and calling it
	// here made Timer.Update 11.8 -> 13.1 ns in a later run (benchstat, 6
	// interleaved runs). Keep the two in step. pinned stays a call (not
	// inlined either): that measured no difference, 12.46 vs 12.55 ns,
	// p=0.24.
	now, ok := nanosFast(h.clock)
	if !ok {
		now = nanosOf(h.clock)
	}
	if r != nil && r.due(now) {
		r.tick(now, int64(h.Count()))
	}
	ep, ok := h.epochFast(now)
	if !ok {
		ep = h.epochAt(now)
	}
	h.pinned().record(v, ep)
	procUnpin()
}

// begin is what record and recordMany do before they pin a shard: read
// the clock, let a timer's rates tick, and find the half-window. record
// writes the same steps out for speed; a change here belongs there too.
func (h *Histogram) begin(r *rates) (ep int64) {
	now, ok := nanosFast(h.clock)
	if !ok {
		now = nanosOf(h.clock)
	}
	if r != nil && r.due(now) {
		r.tick(now, int64(h.Count()))
	}
	ep, ok = h.epochFast(now)
	if !ok {
		ep = h.epochAt(now)
	}
	return ep
}

// pinned pins the P and returns its shard, creating it on first use; the
// caller records and then calls procUnpin.
func (h *Histogram) pinned() *hshard {
	for {
		pid := procPin()
		if sh := h.shards.Load(); sh != nil && pid < len(*sh) {
			if s := (*sh)[pid]; s != nil {
				return s
			}
		}
		procUnpin()
		h.addShard(pid)
	}
}

// UpdateMany records every value of vs, as Update does for each (NaN and
// ±Inf are ignored), at one instant.
//
// Performance tip: a caller that holds many values at once (a drain loop,
// a plugin's batch) pays the clock read and the half-window lookup once per
// call and the P pin once per 256 values instead of each once per value,
// and the moments are kept in registers.
func (h *Histogram) UpdateMany(vs []float64) { h.recordMany(vs, nil) }

// manyChunk bounds how many values recordMany records with the P pinned: a
// pinned goroutine cannot be preempted, so a long slice is taken in slices
// of this size (each well under a microsecond).
const manyChunk = 256

// recordMany is record for a slice of values.
func (h *Histogram) recordMany(vs []float64, r *rates) {
	if len(vs) == 0 {
		return
	}
	ep := h.begin(r)
	for len(vs) > 0 {
		part := vs[:min(len(vs), manyChunk)]
		vs = vs[len(part):]
		h.pinned().recordMany(part, ep)
		procUnpin()
	}
}

// epochFast is epochAt's common case (now is in the current half-window),
// small enough to inline; ok is false when the caller must call epochAt.
func (h *Histogram) epochFast(now int64) (int64, bool) {
	ep := h.epoch.Load()
	return ep, ep != 0 && now < ep*h.half()
}

func (h *Histogram) half() int64 {
	w := h.window
	if w <= 0 {
		w = DefaultWindow
	}
	return int64(w / 2)
}

// epochAt maps a time to its half-window number, never going back: a caller
// whose timestamp is a little stale gets the current half-window. The
// number is one word, advanced by CAS, so racing callers can never pair one
// half-window's number with another's end.
func (h *Histogram) epochAt(now int64) int64 {
	if ep, ok := h.epochFast(now); ok {
		return ep
	}
	ep := h.epoch.Load()
	want := max(now/h.half()+1, 1) // injected clocks before 1970 share the first half-window
	for {
		if ep >= want || h.epoch.CompareAndSwap(ep, want) {
			return max(ep, want)
		}
		ep = h.epoch.Load()
	}
}

func (h *Histogram) addShard(pid int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var old []*hshard
	if p := h.shards.Load(); p != nil {
		old = *p
	}
	if pid < len(old) && old[pid] != nil {
		return
	}
	n := max(len(old), pid+1, runtime.GOMAXPROCS(0))
	s := make([]*hshard, n)
	copy(s, old)
	s[pid] = new(hshard)
	h.shards.Store(&s)
}

// record runs with the P pinned: this goroutine is the shard's only writer.
func (s *hshard) record(v float64, ep int64) {
	w := &s.win[ep&1]
	if w.epoch.Load() < ep { // a stale ep (< epoch) records into the newer half-window
		s.reset(w, ep)
	}
	k := bucketKey(v)
	b := w.b.Load()
	if b == nil || uint(k-b.lo) >= uint(len(b.c)) {
		b = w.grow(b, k)
	}
	// Moments before the bucket: a reader that sees the bucket count sees
	// a min, max and shift that include the value (stores are not
	// reordered on amd64; elsewhere a reader may be one value behind).
	if v < ld(&w.min) {
		stRelaxed(&w.min, math.Float64bits(v))
	}
	if v > ld(&w.max) {
		stRelaxed(&w.max, math.Float64bits(v))
	}
	shift := ld(&w.shift)
	if shift != shift {
		shift = v
		stRelaxed(&w.shift, math.Float64bits(v))
	}
	d := v - shift
	stRelaxed(&w.sum, math.Float64bits(ld(&w.sum)+d))
	stRelaxed(&w.sumsq, math.Float64bits(ld(&w.sumsq)+d*d))
	c := &b.c[k-b.lo]
	if n := c.Load(); n != math.MaxUint32 {
		stRelaxed32(c, n+1)
		return
	}
	s.spill(w, k, c)
}

// recordMany is record for several values: the moments of all of them are
// stored first, then their buckets, so that a reader that sees a bucket
// count sees moments that include its value, as with record.
func (s *hshard) recordMany(vs []float64, ep int64) {
	w := &s.win[ep&1]
	if w.epoch.Load() < ep {
		s.reset(w, ep)
	}
	lo, hi, shift := ld(&w.min), ld(&w.max), ld(&w.shift)
	sum, sumsq := ld(&w.sum), ld(&w.sumsq)
	n := 0
	for _, v := range vs {
		if v-v != 0 { // NaN or ±Inf
			continue
		}
		if shift != shift {
			shift = v
		}
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
		d := v - shift
		sum += d
		sumsq += d * d
		n++
	}
	if n == 0 {
		return
	}
	stRelaxed(&w.min, math.Float64bits(lo))
	stRelaxed(&w.max, math.Float64bits(hi))
	stRelaxed(&w.shift, math.Float64bits(shift))
	stRelaxed(&w.sum, math.Float64bits(sum))
	stRelaxed(&w.sumsq, math.Float64bits(sumsq))
	b := w.b.Load()
	for _, v := range vs {
		if v-v != 0 {
			continue
		}
		k := bucketKey(v)
		if b == nil || uint(k-b.lo) >= uint(len(b.c)) {
			b = w.grow(b, k)
		}
		c := &b.c[k-b.lo]
		if x := c.Load(); x != math.MaxUint32 {
			stRelaxed32(c, x+1)
			continue
		}
		s.spill(w, k, c)
	}
}

// spill moves a full bucket's 2^32 values (the one being recorded included)
// into the half-window's overflow map, copied on write so that readers never
// see it change; readers retry when the spill sequence moves under them.
func (s *hshard) spill(w *hwindow, k int, c *atomic.Uint32) {
	s.spills.Add(1)
	m := make(map[int]uint64)
	if old := w.over.Load(); old != nil {
		maps.Copy(m, *old)
	}
	m[k] += 1 << 32
	w.over.Store(&m)
	c.Store(0)
	s.spills.Add(1)
}

// reset retires a half-window into the shard's cumulative count and sum and
// empties it for epoch ep, keeping its bucket memory so that rotation does
// not allocate.
func (s *hshard) reset(w *hwindow, ep int64) {
	w.epoch.Store(epochResetting)
	if b := w.b.Load(); b != nil {
		var n uint64
		for i := range b.c {
			if c := b.c[i].Load(); c != 0 {
				n += uint64(c)
				b.c[i].Store(0)
			}
		}
		if m := w.over.Load(); m != nil {
			for _, c := range *m {
				n += c
			}
			w.over.Store(nil)
		}
		if n != 0 {
			s.retN.Store(s.retN.Load() + n)
			st(&s.retSum, ld(&s.retSum)+ld(&w.sum)+float64(n)*ld(&w.shift))
		}
	}
	st(&w.shift, math.NaN())
	st(&w.min, math.Inf(1))
	st(&w.max, math.Inf(-1))
	w.sum.Store(0)
	w.sumsq.Store(0)
	w.epoch.Store(ep)
}

// grow returns a bucket array covering k and the old range, copied from b.
// It over-allocates one power of two on the growing side so that a value
// range widening one bucket at a time does not copy every time, and uses
// whatever the allocator's size class adds on top, so Bytes is exact.
func (w *hwindow) grow(b *buckets, k int) *buckets {
	lo, hi := k-subCount/2, k+subCount/2-1
	down := false
	if b != nil {
		lo, hi = min(k, b.lo), max(k, b.lo+len(b.c)-1)
		if down = k < b.lo; down {
			lo -= subCount
		} else {
			hi += subCount
		}
	}
	lo, hi = max(lo, -posBuckets), min(hi, posBuckets)
	c := slices.Grow([]atomic.Uint32(nil), hi-lo+1)
	c = c[:cap(c)]
	if down {
		lo = max(hi-len(c)+1, -posBuckets)
	}
	nb := &buckets{lo: lo, c: c}
	if b != nil {
		for i := range b.c {
			if v := b.c[i].Load(); v != 0 {
				nb.c[b.lo+i-lo].Store(v)
			}
		}
	}
	w.b.Store(nb)
	return nb
}

// Count returns the number of values recorded since creation.
func (h *Histogram) Count() uint64 {
	n, _ := h.collect(nil, 0)
	return n
}

// Sum returns the sum of the values recorded since creation.
func (h *Histogram) Sum() float64 {
	_, sum := h.collect(nil, 0)
	return sum
}

// collect returns the cumulative count and sum and, if sk is not nil, folds
// the half-windows cur-1 and cur into sk. Reading a shard while its writer
// resets a half-window starts the whole collection over: resets happen once
// per half-window per shard and take microseconds, so this is rare.
func (h *Histogram) collect(sk *Sketch, cur int64) (n uint64, sum float64) {
	if sk != nil {
		sk.reset()
	}
	p := h.shards.Load()
	if p == nil {
		return 0, 0
	}
	for attempt := 0; ; attempt++ {
		n, sum = 0, 0
		if sk != nil {
			sk.reset()
		}
		ok := true
		for _, s := range *p {
			if s == nil {
				continue
			}
			sn, ssum, sok := s.read(sk, cur)
			if !sok && attempt < 100 {
				ok = false
				break
			}
			n, sum = n+sn, sum+ssum
		}
		if ok {
			return n, sum
		}
		runtime.Gosched()
	}
}

// read is collect for one shard; ok is false if a reset ran meanwhile.
func (s *hshard) read(sk *Sketch, cur int64) (n uint64, sum float64, ok bool) {
	sp := s.spills.Load()
	e0, e1 := s.win[0].epoch.Load(), s.win[1].epoch.Load()
	if e0 == epochResetting || e1 == epochResetting || sp&1 != 0 {
		return 0, 0, false
	}
	n, sum = s.retN.Load(), ld(&s.retSum)
	for i, e := range [2]int64{e0, e1} {
		into := sk
		if e != cur && e != cur-1 {
			into = nil
		}
		wn, wsum := s.win[i].read(into)
		n, sum = n+wn, sum+wsum
	}
	ok = s.win[0].epoch.Load() == e0 && s.win[1].epoch.Load() == e1 && s.spills.Load() == sp
	return n, sum, ok
}

// read returns the half-window's count and sum and, if sk is not nil, adds
// its buckets and moments to sk.
func (w *hwindow) read(sk *Sketch) (n uint64, sum float64) {
	b := w.b.Load()
	if b == nil {
		return 0, 0
	}
	if sk != nil {
		sk.grow(b.lo)
		sk.grow(b.lo + len(b.c) - 1)
		dst := sk.counts[b.lo-sk.lo:]
		dst = dst[:len(b.c)]
		for i := range b.c {
			c := uint64(b.c[i].Load())
			dst[i] += c
			n += c
		}
	} else {
		for i := range b.c {
			n += uint64(b.c[i].Load())
		}
	}
	if m := w.over.Load(); m != nil {
		for k, c := range *m {
			if sk != nil {
				sk.grow(k)
				sk.counts[k-sk.lo] += c
			}
			n += c
		}
	}
	if n == 0 {
		return 0, 0
	}
	shift, wsum := ld(&w.shift), ld(&w.sum)
	if sk != nil {
		mean := wsum / float64(n)
		m2 := max(ld(&w.sumsq)-wsum*mean, 0) // >= 0 even when read mid-update
		sk.mergeMoments(n, ld(&w.min), ld(&w.max), shift+mean, m2)
	}
	return n, wsum + float64(n)*shift
}

// Sketch returns the values of the current window as a mergeable Sketch.
func (h *Histogram) Sketch() *Sketch {
	sk := &Sketch{}
	h.collect(sk, h.epochAt(nanosOf(h.clock)))
	sk.trim()
	return sk
}

// HistogramSnapshot holds what a histogram reports.
type HistogramSnapshot struct {
	Count uint64  // cumulative, since creation
	Sum   float64 // cumulative, since creation

	// Over the current window; all 0 when it holds no values.
	WindowCount uint64
	Min, Max    float64
	Mean        float64
	Stddev      float64
	Quantiles   [NumQuantiles]float64 // at Quantiles
}

// Snapshot reads the histogram.
func (h *Histogram) Snapshot() HistogramSnapshot {
	return h.snapshotAt(nanosOf(h.clock))
}

func (h *Histogram) snapshotAt(now int64) HistogramSnapshot {
	sk := sketchPool.Get().(*Sketch)
	var s HistogramSnapshot
	s.Count, s.Sum = h.collect(sk, h.epochAt(now))
	s.fromSketch(sk)
	sketchPool.Put(sk)
	return s
}

// sketchPool recycles the dense bucket arrays snapshots merge shards into,
// so that reading a metric allocates nothing once warmed up.
var sketchPool = sync.Pool{New: func() any { return new(Sketch) }}

func (s *HistogramSnapshot) fromSketch(sk *Sketch) {
	s.WindowCount = sk.Count()
	s.Min, s.Max, s.Mean, s.Stddev = sk.Min(), sk.Max(), sk.Mean(), sk.Stddev()
	sk.quantiles(Quantiles[:], s.Quantiles[:])
}

// Kind returns KindHistogram.
func (h *Histogram) Kind() Kind { return KindHistogram }

func (h *Histogram) stats() map[string]any { return h.Snapshot().stats(nil) }

func (s HistogramSnapshot) stats(into map[string]any) map[string]any {
	if into == nil {
		into = make(map[string]any, 11)
	}
	into["count"] = s.Count
	into["min"] = s.Min
	into["max"] = s.Max
	into["mean"] = s.Mean
	into["stddev"] = s.Stddev
	for i, k := range QuantileKeys {
		into[k] = s.Quantiles[i]
	}
	return into
}

// Bytes returns the memory the histogram holds, for capacity planning: the
// histogram, its shard table, its shards and their bucket arrays (whose
// capacities are the allocator's size classes, see grow).
func (h *Histogram) Bytes() int {
	n := int(unsafeSizeofHistogram)
	if p := h.shards.Load(); p != nil {
		n += 8 * cap(*p)
	}
	h.eachShard(func(s *hshard) {
		n += int(unsafeSizeofShard)
		for i := range s.win {
			if b := s.win[i].b.Load(); b != nil {
				n += int(unsafeSizeofBuckets) + 4*cap(b.c)
			}
			if m := s.win[i].over.Load(); m != nil {
				n += 64 * len(*m) // a map entry and its share of the buckets, roughly
			}
		}
	})
	return n
}

func (h *Histogram) eachShard(f func(*hshard)) {
	if p := h.shards.Load(); p != nil {
		for _, s := range *p {
			if s != nil {
				f(s)
			}
		}
	}
}
