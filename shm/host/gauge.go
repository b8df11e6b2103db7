package host

import (
	"math"
	"strconv"
	"sync"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
)

// perWorkerName is the series a shm.GaugePerWorker gauge gets for one worker.
// The "pid-" segment cannot be the whole of any aggregated gauge's name and
// the parent name is never registered itself, so the registry's prefix rule
// never sees a leaf above another leaf among these series.
func perWorkerName(name string, pid uint32) string {
	return name + ".pid-" + strconv.FormatUint(uint64(pid), 10)
}

// gaugeAgg holds every live worker's value of one cross-process gauge and
// publishes their combination to the registry gauge g on every change
// (set, remove). Slots drained on different goroutines share it, hence the
// lock.
type gaugeAgg struct {
	mode  shm.GaugeMode
	g     *registry.Gauge // the combined gauge (nil for shm.GaugePerWorker)
	owned bool            // the host registered g (it was not in the registry before)
	refs  int             // bound definitions of this gauge, under Host.aggMu

	mu   sync.Mutex
	seq  uint64
	vals map[int]gval // by slot
}

type gval struct {
	v   float64
	seq uint64
	pw  *registry.Gauge // shm.GaugePerWorker: this worker's series
}

func (a *gaugeAgg) set(slot int, v float64) {
	a.mu.Lock()
	a.seq++
	gv := a.vals[slot]
	gv.v, gv.seq = v, a.seq
	a.vals[slot] = gv
	pw := gv.pw
	if a.g != nil {
		// Under the lock, so that slots drained concurrently publish in
		// the order they changed the values.
		a.g.Set(a.combineLocked())
	}
	a.mu.Unlock()
	if pw != nil {
		pw.Set(v)
	}
}

func (a *gaugeAgg) remove(slot int) (pw *registry.Gauge) {
	a.mu.Lock()
	pw = a.vals[slot].pw
	delete(a.vals, slot)
	if a.g != nil {
		a.g.Set(a.combineLocked()) // under the lock, as in set
	}
	a.mu.Unlock()
	return pw
}

func (a *gaugeAgg) combineLocked() float64 {
	if len(a.vals) == 0 {
		return 0
	}
	switch a.mode {
	case shm.GaugeSum:
		s := 0.0
		for _, v := range a.vals {
			s += v.v
		}
		return s
	case shm.GaugeMin:
		m := math.Inf(1)
		for _, v := range a.vals {
			m = math.Min(m, v.v)
		}
		return m
	case shm.GaugeMax:
		m := math.Inf(-1)
		for _, v := range a.vals {
			m = math.Max(m, v.v)
		}
		return m
	case shm.GaugeLast:
		var best gval
		for _, v := range a.vals {
			if v.seq >= best.seq {
				best = v
			}
		}
		return best.v
	}
	return 0
}

// join registers a shm.GaugePerWorker series for slot before its first value.
func (a *gaugeAgg) join(slot int, pw *registry.Gauge) {
	a.mu.Lock()
	gv := a.vals[slot]
	gv.pw = pw
	a.vals[slot] = gv
	a.mu.Unlock()
}
