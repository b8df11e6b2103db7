package registry

import (
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Histogram summarises a stream of float64 values: cumulative bucket counts,
// count and sum (since creation, in the Prometheus native-histogram / OTLP
// exponential-histogram layout, see Native), and min, max, mean, standard
// deviation and quantiles over a recent window.
//
// Stats leaf:
//
//	{"count": 1000, "min": 0.2, "max": 9.7, "mean": 1.1, "stddev": 0.8,
//	 "q50": 0.9, "q75": 1.4, "q95": 2.8, "q98": 3.9, "q99": 4.6, "q999": 8.8}
//
// The zero value is a usable histogram with the default 5-minute window.
//
// Quantiles are the midpoints of schema-6 buckets (64 per power of two):
// within RelativeError (0.54%) of the nearest-rank quantile whatever the
// distribution, as long as the histogram's buckets stay under the caps
// (4096 buckets in use per half-window, see docs/core.md); past them it
// lowers its schema and the bound becomes RelativeErrorAt(Schema()).
// Count, sum, mean, min, max and stddev are exact (up to float64 rounding).
// NaN and ±Inf are ignored (not counted). Values are kept in two
// half-windows; what is reported covers the last window/2 to window of
// time, and once a whole window passes without events everything but count
// reads 0, so values neither freeze nor go stale.
//
// Performance tip: a histogram starts with one cell (a lock word and two
// sparse half-windows) whatever GOMAXPROCS is, and grows more cells, up to
// 4, only when writers on different cores collide on its lock, so memory is
// proportional to the buckets in use, not to cores or the range of values.
type Histogram struct {
	clock  Clock
	window time.Duration

	end    atomic.Int64            // end of the current half-window (ns, see endAt); 0 before first use
	cells  atomic.Pointer[[]*cell] // nil until writers collide; then cells[0] is &base
	schema int32                   // changed only with every cell locked (see shrink)

	rmu  sync.Mutex // serialises readers, cell growth and shrinks
	cmu  sync.Mutex // guards the cumulative part below (taken after a cell)
	cum  cstore     // counts of retired half-windows
	cumN uint64
	cumS float64
	one  [1]*cell // lockAll's cell list before cells grow, so reads do not allocate

	base cell
}

// cell is one lockable part of a histogram. A writer takes its lock word
// with one CAS (lkWriter) and updates the half-window with plain loads and
// stores; readers and shrinks take every cell (lkExcl).
type cell struct {
	lk  atomic.Uint32
	win [2]hwindow
}

const (
	lkFree   = 0
	lkWriter = 1
	lkExcl   = 2
)

// Half-window moments: shifted by the first value for precision, so that
// 1e6 + U(0,1) keeps its 0.29 stddev.
type hwindow struct {
	epoch int64
	n     uint64
	shift float64
	sum   float64 // Σ(v-shift)
	sumsq float64 // Σ(v-shift)²
	min   float64
	max   float64
	st    wstore
}

// maxCells bounds the cells of one histogram: more cores than that share
// cells (trying each in turn), so memory never grows with the core count.
var maxCells = min(4, 1<<bits.Len(uint(max(runtime.NumCPU(), 2)-1)))

// Update records v. NaN and ±Inf are dropped where the ring is drained
// (see wstore.addMany), not here, where every value would pay for the
// check.
func (h *Histogram) Update(v float64) { h.record(v, nil) }

// record is the whole record path of Histogram.Update and Timer.Update
// (which passes its rates to tick). It calls nanosOf and endAt only when
// their inlinable fast paths say so: the compiler inlines neither. The
// common case of a push to the current P's ring (see ring.go) is written
// out here: a call to a push function would spill the arguments around
// procPin once more (docs/core.md has the measurements).
func (h *Histogram) record(v float64, r *rates) {
	now, ok := nanosFast(h.clock)
	if !ok {
		now = nanosOf(h.clock)
	}
	if r != nil && r.due(now) {
		r.tick(now, int64(h.tickCount()))
	}
	end, ok := h.endFast(now)
	if !ok {
		end = h.endAt(now)
	}
	pid := procPin()
	if rs := rings.Load(); rs != nil && pid < len(*rs) {
		if g := (*rs)[pid]; g != nil {
			// The producer's fields are on one cache line, which stays on
			// this core: head, written by readers, is loaded only when
			// the cached limit is reached.
			if t := g.tail.Load(); t < g.lim.Load() && h == g.curH.load() && end == g.curEnd.Load() {
				g.vals[t&(ringLen-1)] = v
				stRelaxed(&g.tail, t+1)
				procUnpin()
				return
			}
			if g.put(h, v, end) {
				procUnpin()
				return
			}
		}
	}
	procUnpin()
	pushSlow(h, v, end)
}

// Outcomes of cell.record.
const (
	recOK     = iota
	recShrink // not recorded: the value's bucket would pass a cap
	recCum    // recorded, and the cumulative counts passed a cap
)

// apply records vs (finite values) into a cell, taking its lock once per
// manyChunk values: what a ring's drain and UpdateMany do. end is the end
// of their half-window (see endAt).
func (h *Histogram) apply(vs []float64, end int64) {
	ep := end / h.half()
	for len(vs) > 0 {
		part := vs[:min(len(vs), manyChunk)]
		c := &h.base
		if h.cells.Load() != nil || !c.lk.CompareAndSwap(lkFree, lkWriter) {
			c = h.lockSlow()
		}
		done, st := c.recordMany(h, part, ep)
		seen := h.schema // stable while a cell is locked: shrink locks them all
		unlock(&c.lk)
		if st != recOK {
			h.shrink(st == recShrink, seen)
		}
		vs = vs[done:]
	}
}

// lockSlow returns a cell locked for writing. Collisions between writers
// (lkWriter seen) are what grows cells, as Java's Striped64 grows on CAS
// failures: an uncontended histogram keeps one cell on any core count.
// Readers hold cells only for microseconds, so they are waited for.
func (h *Histogram) lockSlow() *cell {
	for spin := 0; ; spin++ {
		cs := h.cells.Load()
		if cs == nil {
			switch h.base.lk.Load() {
			case lkFree:
				if h.base.lk.CompareAndSwap(lkFree, lkWriter) {
					return &h.base
				}
				continue
			case lkWriter:
				h.grow(1)
				continue
			}
		} else {
			n := len(*cs)
			pid := procPin()
			procUnpin()
			i := pid & (n - 1)
			for k := range n {
				if c := (*cs)[(i+k)&(n-1)]; c.lk.CompareAndSwap(lkFree, lkWriter) {
					return c
				}
			}
			if (*cs)[i].lk.Load() == lkWriter && n < maxCells {
				h.grow(n)
				continue
			}
		}
		if spin > 3 {
			runtime.Gosched() // a reader, or more writers than cells
		}
	}
}

// grow doubles the cells if there are still n of them.
func (h *Histogram) grow(n int) {
	h.rmu.Lock()
	defer h.rmu.Unlock()
	old := h.cells.Load()
	if old == nil && n != 1 || old != nil && len(*old) != n {
		return
	}
	cs := make([]*cell, 2*n)
	if old == nil {
		cs[0] = &h.base
	} else {
		copy(cs, *old)
	}
	for i := range cs {
		if cs[i] == nil {
			cs[i] = new(cell)
		}
	}
	h.cells.Store(&cs)
}

// UpdateMany records every value of vs, as Update does for each (NaN and
// ±Inf are ignored), at one instant.
//
// Performance tip: a caller that holds many values at once (a drain loop,
// a plugin's batch) pays the clock read, the half-window lookup and the
// lock once per call (per 256 values) instead of once per value.
func (h *Histogram) UpdateMany(vs []float64) { h.recordMany(vs, nil) }

// manyChunk bounds how many values apply records under one lock hold, so
// that other writers and readers wait at most a few microseconds.
const manyChunk = 256

func (h *Histogram) recordMany(vs []float64, r *rates) {
	if len(vs) == 0 {
		return
	}
	now, ok := nanosFast(h.clock)
	if !ok {
		now = nanosOf(h.clock)
	}
	if r != nil && r.due(now) {
		r.tick(now, int64(h.tickCount()))
	}
	drainMine()
	h.apply(vs, h.endAt(now))
}

// endFast is endAt's common case (now is in the current half-window),
// small enough to inline; ok is false when the caller must call endAt.
func (h *Histogram) endFast(now int64) (int64, bool) {
	end := h.end.Load()
	return end, end != 0 && now < end
}

func (h *Histogram) half() int64 {
	w := h.window
	if w <= 0 {
		w = DefaultWindow
	}
	return int64(w / 2)
}

// epochAt maps a time to its half-window number (>= 1), never going back.
func (h *Histogram) epochAt(now int64) int64 { return h.endAt(now) / h.half() }

// endAt maps a time to the end of its half-window, ep*half for half-window
// number ep, never going back: a caller whose timestamp is a little stale
// gets the current half-window. The record path keeps the end, not the
// number, so that checking a time against it is one comparison (not a
// multiplication whose result the comparison waits for). It is one word,
// advanced by CAS, so racing callers can never pair one half-window's
// number with another's end.
func (h *Histogram) endAt(now int64) int64 {
	if end, ok := h.endFast(now); ok {
		return end
	}
	ep := h.end.Load()
	want := max(now/h.half()+1, 1) * h.half() // injected clocks before 1970 share the first half-window
	for {
		if ep >= want {
			return ep
		}
		if h.end.CompareAndSwap(ep, want) {
			// Values of the old half-windows may still sit in other Ps'
			// rings (rings drain when full or read). Applied after a value
			// of this new one, they would land in it, since a cell keeps
			// two half-windows; apply them first. Once per half-window.
			drainAll()
			return want
		}
		ep = h.end.Load()
	}
}

// window returns the half-window for ep, retiring what it held before.
func (c *cell) window(h *Histogram, ep int64) (w *hwindow, st int) {
	w = &c.win[ep&1]
	if w.epoch < ep { // a stale ep (< epoch) records into the newer half-window
		st = h.retire(w)
		w.epoch = ep
	}
	return w, st
}

// recordMany records a prefix of vs and returns its length: all of vs
// unless a value's bucket would pass a cap (recShrink). NaN and ±Inf are
// ignored. It is the loop every value goes through (a ring's drain,
// UpdateMany): the buckets first (whose rare slow path is a call, so
// nothing else should be live across it), then the moments, in registers.
func (c *cell) recordMany(h *Histogram, vs []float64, ep int64) (done int, st int) {
	w, st := c.window(h, ep)
	schema := MaxSchema + h.schema
	d := MaxSchema - schema
	done, bad := w.st.addMany(vs, schema, d, int32(1)<<d-1)
	if done < len(vs) {
		st = recShrink
	}
	if bad == 0 {
		w.moments(vs[:done])
	} else {
		w.momentsFinite(vs[:done])
	}
	return done, st
}

// moments adds vs (all finite) to the half-window's moments.
func (w *hwindow) moments(vs []float64) {
	if len(vs) == 0 {
		return
	}
	if w.n == 0 {
		w.shift, w.min, w.max = vs[0], vs[0], vs[0]
	}
	w.n += uint64(len(vs))
	lo, hi, shift, sum, sumsq := w.min, w.max, w.shift, w.sum, w.sumsq
	for _, v := range vs {
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
		dv := v - shift
		sum += dv
		sumsq += dv * dv
	}
	w.min, w.max, w.sum, w.sumsq = lo, hi, sum, sumsq
}

// momentsFinite is moments for values some of which are NaN or ±Inf.
func (w *hwindow) momentsFinite(vs []float64) {
	for _, v := range vs {
		if v-v == 0 {
			w.moments([]float64{v})
		}
	}
}

// retire folds a half-window into the cumulative counts and empties it,
// keeping its memory, so that rotation does not allocate.
func (h *Histogram) retire(w *hwindow) int {
	st := recOK
	if w.n != 0 {
		h.cmu.Lock()
		h.cum.addW(&w.st)
		h.cumN += w.n
		h.cumS += w.sum + float64(w.n)*w.shift
		if h.cum.capped() {
			st = recCum
		}
		h.cmu.Unlock()
	}
	w.st.reset()
	w.n, w.sum, w.sumsq = 0, 0, 0
	return st
}

// lockAll takes every cell exclusively and the cumulative counts; the
// caller holds rmu. Writers wait (see lockSlow) while it holds them.
func (h *Histogram) lockAll() []*cell {
	h.one[0] = &h.base
	cs := h.one[:]
	if p := h.cells.Load(); p != nil {
		cs = *p
	}
	for _, c := range cs {
		for spin := 0; !c.lk.CompareAndSwap(lkFree, lkExcl); spin++ {
			if spin > 3 {
				runtime.Gosched()
			}
		}
	}
	h.cmu.Lock()
	return cs
}

func (h *Histogram) unlockAll(cs []*cell) {
	h.cmu.Unlock()
	for _, c := range cs {
		c.lk.Store(lkFree)
	}
}

// shrink lowers the schema by one (when force: a value did not fit) and
// then as long as a store is past a cap, re-bucketing every store, so that
// memory stays bounded whatever the values; the quantile error bound
// doubles with each step (RelativeErrorAt).
func (h *Histogram) shrink(force bool, seen int32) {
	h.rmu.Lock()
	defer h.rmu.Unlock()
	cs := h.lockAll()
	defer h.unlockAll(cs)
	// Two appliers refused at one schema must lower it once, not twice:
	// the first one's shrink already made room for the second's value.
	force = force && h.schema == seen
	for (force || h.cum.capped()) && h.schema > MinSchema-MaxSchema {
		force = false
		h.cum.downscale(1)
		for _, c := range cs {
			for i := range c.win {
				c.win[i].st.downscale(1)
			}
		}
		h.schema--
	}
}
