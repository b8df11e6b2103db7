// Slot life: liveness, dropped counts, draining a dead or closed worker
// and freeing its slot.

package host

import (
	"sync/atomic"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm/internal/layout"
	"github.com/tapes-go/tapes/wire"
)

// setActive keeps the count of ACTIVE bound slots behind the workers gauge:
// a pass no longer visits every slot to count them.
func (h *Host) setActive(hs *hslot, a bool) {
	if hs.active != a {
		hs.active = a
		if a {
			h.active++
		} else {
			h.active--
		}
	}
}

// recover reads the indices of a slot the host has not seen before and
// completes a release a previous host died in the middle of.
func (h *Host) recover(i int, hs *hslot, ps *passStats) {
	c := atomic.LoadUint64(h.slotU64(i, slotConsumer))
	t := atomic.LoadUint64(h.slotU64(i, slotTaking))
	hs.consumer = c
	switch {
	case t > c && t-c <= uint64(h.g.RingRecs):
		h.release(i, c, t)
		hs.consumer = t
	case t != c:
		ps.malformed++ // taking is only ever equal to or just ahead of consumer
		atomic.StoreUint64(h.slotU64(i, slotTaking), c)
	}
}

// alive reports whether the process that claimed a slot still runs. The
// start time tells a reused pid from the original process; a slot whose
// worker died between its claim and storing the start time (0) is judged
// by the pid alone. When /proc cannot be read (the process is out of file
// descriptors, say) the answer is unknown: it is counted
// (<prefix>.liveness_unknown), kill(pid, 0) — which needs no descriptor —
// still tells a pid that no longer exists, and the slot is kept only until
// the next check asks again. It is never taken as "alive for good".
func (h *Host) alive(pid uint32, start uint64) bool {
	s, ok, err := procStart(int(pid))
	if err == nil {
		return ok && (start == 0 || s == start)
	}
	if h.self.unknown != nil {
		h.self.unknown.Inc()
	}
	return !pidGone(pid)
}

// droppedName is the counter of what one worker dropped, a per-worker
// series like a shm.GaugePerWorker gauge's.
func (h *Host) droppedName(pid uint32) string { return perWorkerName(h.prefix+".dropped", pid) }

// refresh reads the worker-written counters that the hot path must not
// touch on every pass: dropped events and the backlog.
func (h *Host) refresh(i int, hs *hslot, ps *passStats) {
	d := atomic.LoadUint64(h.slotU64(i, slotDropped))
	switch {
	case d > hs.dropped:
		addSat(h.self.dropped, d-hs.dropped)
		if hs.droppedC == nil {
			if m, err := h.reg.GetOrCreate(registry.KindCounter, h.droppedName(hs.pid)); err == nil {
				hs.droppedC = m.(*registry.Counter)
			}
		}
		if hs.droppedC != nil {
			addSat(hs.droppedC, d-hs.dropped)
		}
		hs.dropped = d
	case d < hs.dropped:
		ps.malformed++ // a counter running backwards: resynchronise
		hs.dropped = d
	}
	res := atomic.LoadUint64(h.slotU64(i, slotReserve))
	if res >= hs.consumer {
		ps.lag += int(min(res-hs.consumer, uint64(h.g.RingRecs)))
	} else {
		ps.malformed++
	}
}

// finish handles a slot whose worker is gone (dead, closed or corrupt):
// it applies every committed record, skips records the worker claimed but
// never committed, and frees the slot. It reports false if the slot must
// wait: a closed worker that is still running may be committing a record.
func (h *Host) finish(i int, hs *hslot, w uint64, ps *passStats) bool {
	pid, _, st := unpackState(w)
	if hs.bound {
		h.drainSlot(i, hs, ps, false, 0)
	}
	res := atomic.LoadUint64(h.slotU64(i, slotReserve))
	holes := hs.bound && res > hs.consumer && res-hs.consumer <= uint64(h.g.RingRecs)
	if holes && st == layout.StateClosed && h.alive(pid, atomic.LoadUint64(h.slotU64(i, slotStart))) {
		if hs.holeAt.IsZero() {
			hs.holeAt = time.Now()
		}
		if time.Since(hs.holeAt) < time.Second {
			return false
		}
	}
	if holes {
		h.drainSlot(i, hs, ps, true, res)
	}
	if hs.bound {
		h.refresh(i, hs, ps)
	}
	h.unbind(i, hs)
	h.reset(i, w)
	h.self.reclaimed.Inc()
	return true
}

// unbind forgets slot i's occupant: its gauge values stop counting and its
// per-worker series leave the registry. Cumulative metrics keep what it
// recorded.
func (h *Host) unbind(i int, hs *hslot) {
	if !hs.bound {
		return
	}
	for _, d := range hs.defs {
		if d.g == nil || d.rejected {
			continue
		}
		if d.g.remove(i) != nil {
			h.reg.Unregister(perWorkerName(d.name, hs.pid))
		}
		h.releaseAgg(d.name, d.g)
	}
	if hs.droppedC != nil {
		h.reg.Unregister(h.droppedName(hs.pid))
	}
	h.setActive(hs, false)
	h.unwatch(hs)
	*hs = hslot{}
}

// releaseAgg drops one worker's definition of a cross-process gauge. When
// no bound worker defines it any more the aggregate is forgotten and its
// combined gauge leaves the registry (a gauge no live process defines has
// no value to report), so a stream of workers defining new gauge names
// costs the host nothing once they are gone; the next worker to define
// the name starts afresh and chooses its mode.
func (h *Host) releaseAgg(name string, a *gaugeAgg) {
	h.aggMu.Lock()
	defer h.aggMu.Unlock()
	if a.refs--; a.refs > 0 {
		return
	}
	if h.aggs[name] == a {
		delete(h.aggs, name)
	}
	if a.owned {
		h.reg.Unregister(name)
	}
}

// reset zeroes slot i and frees it. The state goes through
// layout.StateReclaiming so that no worker claims the slot half-reset; a host that
// dies in between leaves layout.StateReclaiming, which the next host finishes.
func (h *Host) reset(i int, w uint64) {
	_, gen, _ := unpackState(w)
	st := h.slotU64(i, slotState)
	rw := packState(0, gen, layout.StateReclaiming)
	if w != rw && !atomic.CompareAndSwapUint64(st, w, rw) {
		return // changed under us; look again next pass
	}
	base := h.g.SlotOff(i)
	n := atomic.LoadUint64(h.slotU64(i, slotDefCount))
	n = min(n, uint64(h.g.MaxDefs))
	zeroRange(h.m, base+h.g.DefOffset, base+h.g.DefOffset+int(n)*layout.DefSize)
	zeroRange(h.m, base+h.g.RingOffset, base+h.g.RingOffset+h.g.RingRecs*wire.RecordSize)
	// Every word after the state word, reserved ones included: a FREE slot
	// is all zero (a worker still scrubs it when it claims it).
	for off := slotStart; off < slotDefs; off += 8 {
		atomic.StoreUint64(h.slotU64(i, off), 0)
	}
	atomic.StoreUint64(st, packState(0, gen, layout.StateFree))
}
