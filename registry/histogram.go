package registry

import (
	"math"
	"runtime"
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
// distribution. NaN and ±Inf are ignored (not counted). Values are kept in
// two half-windows; what is reported covers the last window/2 to window of
// time, and once a whole window passes without events everything but count
// reads 0, so values neither freeze nor go stale.
//
// Performance tip: each P (GOMAXPROCS slot) that records gets its own shard,
// written only by that P with plain atomic stores, so Update scales across
// cores without contended cache lines. Memory grows with the P count and the
// range of values seen: about 1 KiB per power of two of range per shard (a
// timer seeing 1 µs to 10 s on one P holds ~24 KiB) and never with the
// number of observations.
type Histogram struct {
	clock  Clock
	window time.Duration

	epoch  atomic.Int64 // current half-window number (1-based)
	until  atomic.Int64 // when epoch ends, in clock nanoseconds
	shards atomic.Pointer[[]*hshard]
	mu     sync.Mutex // guards shard creation
}

type hshard struct {
	_        [64]byte // keep other allocations off the written lines
	total    atomic.Uint64
	totalSum atomic.Uint64 // float64 bits
	win      [2]hwindow
	_        [64]byte
}

// hwindow is one half-window of one shard. Only the shard's P writes it;
// readers use epoch as a sequence lock around reset.
type hwindow struct {
	epoch atomic.Int64 // half-window number; 0 while unused or being reset
	count atomic.Uint64
	shift atomic.Uint64 // float64 bits: first value, subtracted from sums for precision
	sum   atomic.Uint64 // float64 bits: Σ(v-shift)
	sumsq atomic.Uint64 // float64 bits: Σ(v-shift)²
	min   atomic.Uint64
	max   atomic.Uint64
	b     atomic.Pointer[buckets]
}

type buckets struct {
	lo int
	c  []atomic.Uint64
}

func ld(a *atomic.Uint64) float64    { return math.Float64frombits(a.Load()) }
func st(a *atomic.Uint64, v float64) { a.Store(math.Float64bits(v)) }

// Update records v.
func (h *Histogram) Update(v float64) {
	h.record(nanosOf(h.clock), v)
}

func (h *Histogram) record(now int64, v float64) {
	if v-v != 0 { // NaN or ±Inf
		return
	}
	ep := h.epochAt(now)
	for {
		pid := procPin()
		if sh := h.shards.Load(); sh != nil && pid < len(*sh) {
			if s := (*sh)[pid]; s != nil {
				s.record(v, ep)
				procUnpin()
				return
			}
		}
		procUnpin()
		h.addShard(pid)
	}
}

func (h *Histogram) half() int64 {
	w := h.window
	if w <= 0 {
		w = DefaultWindow
	}
	return int64(w / 2)
}

// epochAt maps a time to its half-window number. The division happens once
// per half-window; the record path compares against a cached boundary.
func (h *Histogram) epochAt(now int64) int64 {
	if now < h.until.Load() {
		if ep := h.epoch.Load(); ep != 0 {
			return ep
		}
	}
	half := h.half()
	ep := now/half + 1
	if now < (ep-1)*half { // negative times (injected clocks before 1970)
		ep--
	}
	h.epoch.Store(ep)
	h.until.Store(ep * half)
	return ep
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
	if e := w.epoch.Load(); e != ep && e < ep {
		w.reset(ep)
	}
	k := bucketKey(v)
	b := w.b.Load()
	if b == nil || k < b.lo || k >= b.lo+len(b.c) {
		b = w.grow(b, k)
	}
	c := &b.c[k-b.lo]
	c.Store(c.Load() + 1)
	n := w.count.Load()
	if n == 0 {
		st(&w.shift, v)
		st(&w.min, v)
		st(&w.max, v)
	} else {
		if v < ld(&w.min) {
			st(&w.min, v)
		}
		if v > ld(&w.max) {
			st(&w.max, v)
		}
	}
	d := v - ld(&w.shift)
	st(&w.sum, ld(&w.sum)+d)
	st(&w.sumsq, ld(&w.sumsq)+d*d)
	w.count.Store(n + 1)
	s.total.Store(s.total.Load() + 1)
	st(&s.totalSum, ld(&s.totalSum)+v)
}

// reset empties a half-window for reuse, keeping its bucket memory so that
// rotation does not allocate.
func (w *hwindow) reset(ep int64) {
	w.epoch.Store(0)
	if b := w.b.Load(); b != nil {
		for i := range b.c {
			b.c[i].Store(0)
		}
	}
	w.count.Store(0)
	w.sum.Store(0)
	w.sumsq.Store(0)
	w.epoch.Store(ep)
}

// grow returns a bucket array covering k and the old range, copied from b.
// It over-allocates one power of two on the growing side so that a value
// range widening one bucket at a time does not copy every time.
func (w *hwindow) grow(b *buckets, k int) *buckets {
	lo, hi := k, k
	if b != nil {
		lo, hi = min(lo, b.lo), max(hi, b.lo+len(b.c)-1)
		if k < b.lo {
			lo -= subCount
		} else {
			hi += subCount
		}
	} else {
		lo, hi = k-subCount/2, k+subCount/2-1
	}
	lo, hi = max(lo, -posBuckets), min(hi, posBuckets)
	nb := &buckets{lo: lo, c: make([]atomic.Uint64, hi-lo+1)}
	if b != nil {
		for i := range b.c {
			nb.c[b.lo+i-lo].Store(b.c[i].Load())
		}
	}
	w.b.Store(nb)
	return nb
}

// Count returns the number of values recorded since creation.
func (h *Histogram) Count() uint64 {
	var n uint64
	h.eachShard(func(s *hshard) { n += s.total.Load() })
	return n
}

// Sum returns the sum of the values recorded since creation.
func (h *Histogram) Sum() float64 {
	var sum float64
	h.eachShard(func(s *hshard) { sum += ld(&s.totalSum) })
	return sum
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

// Sketch returns the values of the current window as a mergeable Sketch.
func (h *Histogram) Sketch() *Sketch {
	return h.sketchAt(nanosOf(h.clock))
}

func (h *Histogram) sketchAt(now int64) *Sketch {
	cur := h.epochAt(now)
	sk := &Sketch{}
	h.eachShard(func(s *hshard) {
		for i := range s.win {
			s.win[i].readInto(sk, cur)
		}
	})
	return sk
}

// readInto merges the half-window into sk if it belongs to the current
// window, retrying nothing: a window reset while being read is one that just
// left the window.
func (w *hwindow) readInto(sk *Sketch, cur int64) {
	e := w.epoch.Load()
	if e != cur && e != cur-1 {
		return
	}
	n := w.count.Load()
	if n == 0 {
		return
	}
	shift, sum, sumsq := ld(&w.shift), ld(&w.sum), ld(&w.sumsq)
	lo, hi := ld(&w.min), ld(&w.max)
	var counts []uint64
	var blo int
	if b := w.b.Load(); b != nil {
		counts = make([]uint64, len(b.c))
		for i := range b.c {
			counts[i] = b.c[i].Load()
		}
		blo = b.lo
	}
	if w.epoch.Load() != e {
		return
	}
	mean := sum / float64(n)
	m2 := sumsq - sum*mean
	if m2 < 0 {
		m2 = 0
	}
	sk.addCounts(trim(blo, counts))
	sk.mergeMoments(n, lo, hi, shift+mean, m2)
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
	sk := h.sketchAt(now)
	s := HistogramSnapshot{Count: h.Count(), Sum: h.Sum()}
	s.fromSketch(sk)
	return s
}

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

// Bytes returns the memory the histogram holds, for capacity planning.
func (h *Histogram) Bytes() int {
	n := int(unsafeSizeofHistogram)
	h.eachShard(func(s *hshard) {
		n += int(unsafeSizeofShard) + 8
		for i := range s.win {
			if b := s.win[i].b.Load(); b != nil {
				n += 8 * cap(b.c)
			}
		}
	})
	return n
}
