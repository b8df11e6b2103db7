// The host's own metrics (under Config.Prefix) and their registration.

package host

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/tapes-go/tapes/registry"
)

type selfMetrics struct {
	events, malformed, rejected, discarded, aborted, reclaimed, dropped *registry.Counter
	refused, unknown, repaired, damaged                                 *registry.Counter
	workers, lag                                                        *registry.Gauge
}

// countRefused adds the workers' shm.ErrNoSlot refusals since the last check.
func (h *Host) countRefused() {
	r := atomic.LoadUint64(u64(h.m, hdrRefused))
	switch {
	case r > h.seenRefused:
		addSat(h.self.refused, r-h.seenRefused)
	case r < h.seenRefused:
		h.self.malformed.Inc() // running backwards: scribbled
	}
	h.seenRefused = r
}

// addSat adds d to a host counter, saturating at the largest int64: the
// amounts come from words any worker can scribble on, and a counter of
// the host must never wrap negative.
func addSat(c *registry.Counter, d uint64) {
	room := uint64(math.MaxInt64 - max(c.Value(), 0))
	if d = min(d, room); d > 0 {
		c.Add(int64(d))
	}
}

// Passes returns how many passes over the rings have completed, by Drain
// and DrainOnce. A running Drain passes at least every maximum idle sleep
// (250 ms by default, 1 s with no worker attached), so a count that stops
// moving means draining stopped:
// health checks read it as a heartbeat.
func (h *Host) Passes() uint64 { return h.passes.Load() }

// bind registers the host's own metrics in r, the Host's registry for
// its life (Config.Registry).
func (h *Host) bind(r *registry.Registry) error {
	p := h.prefix + "."
	var s selfMetrics
	var err error
	counter := func(name string) *registry.Counter {
		m, e := r.GetOrCreate(registry.KindCounter, p+name)
		if e != nil {
			err = errors.Join(err, e)
			return nil
		}
		return m.(*registry.Counter)
	}
	gauge := func(name string) *registry.Gauge {
		g, e := r.GaugeFunc(p+name, nil)
		if e != nil {
			err = errors.Join(err, e)
		}
		return g
	}
	s.events = counter("drained")
	s.malformed = counter("malformed")
	s.rejected = counter("rejected")
	s.discarded = counter("discarded")
	s.aborted = counter("aborted")
	s.reclaimed = counter("reclaimed")
	s.dropped = counter("dropped.all")
	s.refused = counter("refused")
	s.unknown = counter("liveness_unknown")
	s.repaired = counter("repaired")
	s.damaged = counter("damaged")
	s.workers = gauge("workers")
	s.lag = gauge("lag")
	if err != nil {
		return fmt.Errorf("shm: registering the host's metrics under %q: %w", h.prefix, err)
	}
	h.reg, h.self = r, s
	if h.repaired > 0 {
		s.repaired.Add(int64(h.repaired))
		h.repaired = 0
	}
	h.seenRefused = 0 // the new registry counts the file's refusals from the start
	h.aggs = map[string]*gaugeAgg{}
	for i := range h.slots {
		h.unwatch(&h.slots[i])
		h.slots[i] = hslot{}
	}
	h.active, h.shown, h.pend, h.pendLive, h.pendMoved = 0, -1, h.pend[:0], 0, false
	return nil
}
