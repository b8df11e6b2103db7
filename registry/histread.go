// The read side of a Histogram: counts, sums, snapshots of the window and
// its memory, each merging the cells and the rings that hold values not yet
// applied.

package registry

import (
	"sync"
	"unsafe"
)

// Schema returns the histogram's bucket schema: MaxSchema unless its
// buckets passed the caps.
func (h *Histogram) Schema() int32 {
	drainAll() // values still in rings may lower it
	h.rmu.Lock()
	defer h.rmu.Unlock()
	return MaxSchema + h.schema
}

// Count returns the number of values recorded since creation.
func (h *Histogram) Count() uint64 {
	n, _ := h.collect(nil, 0, nil, nil)
	return n
}

// tickCount is the count a timer's rate tick (every 5 s) uses: values
// applied since creation after applying the current P's ring, so that one
// goroutine's own values are all counted (TestEWMAReference needs that),
// but not every P's ring, as Count does: a record would otherwise pay for
// a pass over the whole process's rings and take other cores' ring locks.
// Values still in other Ps' rings are counted at the next tick (or by a
// read, which drains them all).
func (h *Histogram) tickCount() uint64 {
	drainMine()
	h.rmu.Lock()
	defer h.rmu.Unlock()
	cs := h.lockAll()
	defer h.unlockAll(cs)
	n := h.cumN
	for _, c := range cs {
		for i := range c.win {
			n += c.win[i].n
		}
	}
	return n
}

// Sum returns the sum of the values recorded since creation.
func (h *Histogram) Sum() float64 {
	_, sum := h.collect(nil, 0, nil, nil)
	return sum
}

// collect returns the cumulative count and sum; if sk is not nil it folds
// the half-windows cur-1 and cur into sk (and, if out is not nil, fills
// out's window values from them), and if all is not nil every bucket count
// since creation into all. It holds every cell meanwhile, so what it reads
// is one consistent state.
func (h *Histogram) collect(sk *Sketch, cur int64, all *cstore, out *HistogramSnapshot) (n uint64, sum float64) {
	drainAll()
	h.rmu.Lock()
	defer h.rmu.Unlock()
	cs := h.lockAll()
	defer h.unlockAll(cs)
	if sk != nil {
		sk.reset(MaxSchema + h.schema)
	}
	n, sum = h.cumN, h.cumS
	if all != nil {
		all.addC(&h.cum)
	}
	var one *wstore // the only half-window in the window, if so
	live := 0
	for _, c := range cs {
		for i := range c.win {
			w := &c.win[i]
			if w.n == 0 {
				continue
			}
			n += w.n
			sum += w.sum + float64(w.n)*w.shift
			if all != nil {
				all.addW(&w.st)
			}
			if sk != nil && (w.epoch == cur || w.epoch == cur-1) {
				if live++; live == 1 && out != nil {
					one = &w.st // merged below only if another one follows
				} else {
					if one != nil {
						sk.b.addW(one)
						one = nil
					}
					sk.b.addW(&w.st)
				}
				mean := w.sum / float64(w.n)
				m2 := max(w.sumsq-w.sum*mean, 0)
				sk.mergeMoments(w.n, w.min, w.max, w.shift+mean, m2)
			}
		}
	}
	if out != nil {
		out.WindowCount = sk.Count()
		out.Min, out.Max, out.Mean, out.Stddev = sk.Min(), sk.Max(), sk.Mean(), sk.Stddev()
		if one != nil {
			sk.windowQuantiles(one, Quantiles[:], out.Quantiles[:])
		} else {
			sk.quantiles(Quantiles[:], out.Quantiles[:])
		}
	}
	return n, sum
}

// Sketch returns the values of the current window as a mergeable Sketch.
func (h *Histogram) Sketch() *Sketch {
	sk := &Sketch{}
	h.collect(sk, h.epochAt(nanosOf(h.clock)), nil, nil)
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
	s.Count, s.Sum = h.collect(sk, h.epochAt(now), nil, &s)
	sketchPool.Put(sk)
	return s
}

// sketchPool recycles the sketches snapshots merge cells into, so that
// reading a metric allocates nothing once warmed up.
var sketchPool = sync.Pool{New: func() any { return new(Sketch) }}

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
// histogram with its first cell, further cells, and their bucket blocks
// and directories (capacities, as allocated).
func (h *Histogram) Bytes() int {
	drainAll()
	h.rmu.Lock()
	defer h.rmu.Unlock()
	cs := h.lockAll()
	defer h.unlockAll(cs)
	n := int(unsafe.Sizeof(*h)) + h.cum.bytes()
	if len(cs) > 1 {
		n += 8*cap(cs) + int(unsafe.Sizeof(cell{}))*(len(cs)-1)
	}
	for _, c := range cs {
		for i := range c.win {
			n += c.win[i].st.bytes()
		}
	}
	return n
}

// Cells returns how many cells the histogram has grown (1 until writers on
// different cores collided on it).
func (h *Histogram) Cells() int {
	if p := h.cells.Load(); p != nil {
		return len(*p)
	}
	return 1
}
