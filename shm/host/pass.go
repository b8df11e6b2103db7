// One pass over the file: which slots to visit (doorbells, full scans),
// liveness, and draining busy slots in parallel.

package host

import (
	mathbits "math/bits"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapes-go/tapes/shm/internal/layout"
	"github.com/tapes-go/tapes/wire"
)

// DrainOnce applies every event committed when it is called, checks which
// workers are alive and reclaims the slots of dead or closed ones (a closed
// slot with a record still being written waits up to a second), and
// returns the number of events applied. Tests and shutdown paths use it;
// services use Drain.
func (h *Host) DrainOnce() (int, error) {
	return h.drain(true)
}

// claimCheckEvery is how soon after a liveness check a worker waiting for a
// slot (claimWaits moved) gets another: reclaiming is then prompt, and a
// worker that waits for a full file costs the host at most a few hundred
// /proc reads a second. claimScanRatio spaces them further by what they
// cost: such a check reads every slot (4096 slots: 3-20 ms on the 2-vCPU
// machine), and claimWaits is a word any worker may add to in a loop,
// which cost the host a whole core before (TestClaimWaitsFlood); now at
// most 1/claimScanRatio of one.
const (
	claimCheckEvery = 2 * time.Millisecond
	claimScanRatio  = 20
)

// claimDue reports whether a worker waiting for a slot may have its
// liveness check now, and if not, how long until it may. The caller holds
// h.mu.
func (h *Host) claimDue(now time.Time) (due bool, in time.Duration) {
	in = max(claimCheckEvery, claimScanRatio*h.fullCost) - now.Sub(h.lastLive)
	return in <= 0, in
}

func (h *Host) drain(live bool) (n int, err error) { return h.drainAt(live, time.Now()) }

// drainAt is drain with the clock read by the caller (Drain's wait, as it
// woke: one read fewer per wake-up).
func (h *Host) drainAt(live bool, now time.Time) (n int, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, ErrClosed
	}
	if h.damage != nil {
		return 0, h.damage
	}
	// DrainOnce and the first pass (workers may have attached before the
	// host did) look at every slot at once.
	full := live || h.passes.Load() == 0
	tick := full || now.Sub(h.lastLive) >= h.liveEvery
	if tick {
		if err := h.checkFile(); err != nil {
			return 0, h.damaged(err)
		}
	}
	err = h.protect(func() {
		live = tick
		w := atomic.LoadUint64(u64(h.m, hdrClaimWaits))
		due, _ := h.claimDue(now)
		h.claimed = w != h.seenWaits && due
		if h.claimed {
			live, full = true, true // a worker waits for a slot: find every free-able one
		}
		if live {
			h.lastLive, h.seenWaits = now, w
			h.countRefused()
			if now.Sub(h.lastFull) >= h.fullScanInterval() {
				full = true
			}
		}
		if full {
			h.lastFull = now
			h.fullScans.Add(1)
		}
		n = h.pass(live, full, now)
		if n == 0 || full {
			// Read by idleNap (a pass that found nothing) and claimDue (a
			// full one) only: passes that drain events, back to back under
			// load, skip the clock.
			h.passCost = time.Since(now)
			if full {
				h.fullCost = h.passCost
			}
		}
	})
	if err != nil {
		return n, h.damaged(err)
	}
	h.passes.Add(1)
	return n, nil
}

func (h *Host) slotU64(i, off int) *uint64 { return u64(h.m, h.g.SlotOff(i)+off) }

type passStats struct {
	events, malformed, discarded, aborted, lag int
	more                                       bool // a slot was left at its budget with records committed
}

func (ps *passStats) add(o passStats) {
	ps.more = ps.more || o.more
	ps.events += o.events
	ps.malformed += o.malformed
	ps.discarded += o.discarded
	ps.aborted += o.aborted
	ps.lag += o.lag
}

// slotWork is a bound slot a pass drains, with the state word the pass
// read for it.
type slotWork struct {
	i  int
	w  uint64
	c0 uint64 // the consumer index before the drain
}

// testHookParallel tells a test how many goroutines a pass drains on.
var testHookParallel func(procs int)

// parallelMin is the backlog at which a slot is worth a goroutine of its
// own: the hand-off costs microseconds, and 4Ki records take ~30 µs. A
// quarter of a default ring, so that default rings get there before they
// fill.
const parallelMin = 4 << 10

// drainSlots drains the slots of a pass. When two or more hold a large
// backlog it drains them on up to GOMAXPROCS goroutines: each slot has its
// own ring, definitions and state, the registry is safe for concurrent use
// (and shards histograms per P), and what slots share (the gauge
// aggregates' map) is locked. A host serving many busy workers then applies
// on every core instead of one.
func (h *Host) drainSlots(todo []slotWork, ps *passStats) {
	big := 0
	for _, t := range todo {
		if atomic.LoadUint64(h.slotU64(t.i, slotReserve))-h.slots[t.i].consumer >= parallelMin {
			big++
		}
	}
	procs := big
	if procs >= 2 { // GOMAXPROCS takes the scheduler's lock: not on every pass
		procs = min(procs, runtime.GOMAXPROCS(0))
	}
	if procs < 2 {
		for _, t := range todo {
			h.drainSlot(t.i, &h.slots[t.i], ps, false, 0)
		}
		return
	}
	if testHookParallel != nil {
		testHookParallel(procs)
	}
	var next atomic.Int64
	stats := make([]passStats, procs)
	panics := make([]any, procs)
	work := func(k int) {
		// A fault on the mapping (the file truncated under the host) is
		// re-raised on the pass's goroutine, where protect reports it.
		defer func() { panics[k] = recover() }()
		for {
			j := int(next.Add(1)) - 1
			if j >= len(todo) {
				return
			}
			t := todo[j]
			h.drainSlot(t.i, &h.slots[t.i], &stats[k], false, 0)
		}
	}
	var wg sync.WaitGroup
	for k := 1; k < procs; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			debug.SetPanicOnFault(true) // per goroutine; this one ends here
			work(k)
		}()
	}
	work(0)
	wg.Wait()
	for k := range stats {
		ps.add(stats[k])
	}
	for _, p := range panics {
		if p != nil {
			panic(p)
		}
	}
}

// A pass that finds suspectRings or more FREE slots whose bells rang
// (honest workers ring only the slot they hold, once it is ACTIVE) puts off,
// for guardFor, the bells of every slot neither bound nor being claimed:
// those are visited every suspectEvery, or suspectCost per such slot if
// longer, and at liveness checks. A worker ringing all 4096 bells made every
// pass visit every slot, at one page each, one pass a coalescing window
// while honest workers' events flowed (200 of them: 25% of a core). The
// price, in that mode only, is that a worker just attached has its first
// events seen up to that long after.
const (
	suspectRings = 16
	suspectEvery = 50 * time.Millisecond
	suspectCost  = 50 * time.Microsecond
)

// fullScanEvery is how many liveness intervals apart a pass reads the
// state word of every slot (10 s by default), and not only of the slots
// whose doorbell rang, the bound ones and those being claimed. It finds
// what rang no bell: a worker that died between its claim and its first
// ring, or a client that skips the doorbell. Reading one word of each
// slot touches one page of each, 1-5 µs apiece on a VM: 4096 slots every
// 250 ms would be most of an idle host's cost. A worker waiting for a slot
// (claimWaits) gets a full scan at once.
//
// Files of more than fullScanSlots slots are scanned proportionally less
// often (4096 slots: every 160 s), so that the scans cost an idle host
// the same whatever its size: at 10 s, 3-20 ms per scan of 4096 slots
// were 0.03-0.2% of a core, the idle target being 0.1% in all.
const (
	fullScanEvery = 40
	fullScanSlots = 256
)

func (h *Host) fullScanInterval() time.Duration {
	return fullScanEvery * h.liveEvery * time.Duration(max(1, h.g.Slots/fullScanSlots))
}

// touch loads, for every slot a pass visits, the lines its worker wrote
// since the last pass (the state word, the reserve and definition count,
// the next record) and the host's own (the consumer index, evicted by
// then on a machine running the workers), one slot after another in a loop that does nothing
// else: each is a cache miss served from another CPU, and here the
// processor has a dozen in flight at once, where the pass, which acts on
// each before the next, waits for them one by one. With 200 workers at
// 100 events/s each pass finds ~30 slots with one record each.
func (h *Host) touch(visit []int) {
	var sum uint64
	mask := uint64(h.g.RingRecs - 1)
	for _, i := range visit {
		off := h.g.SlotOff(i)
		sum += atomic.LoadUint64(u64(h.m, off+slotState)) + atomic.LoadUint64(u64(h.m, off+slotReserve)) + atomic.LoadUint64(u64(h.m, off+slotConsumer))
		if hs := &h.slots[i]; hs.bound {
			sum += atomic.LoadUint64(u64(h.m, off+h.g.RingOffset+int(hs.consumer&mask)*wire.RecordSize))
		}
	}
	h.touched = sum // kept, so that the loads are too
}

// addPend keeps slot i, whose ring holds a record claimed but not
// committed yet (or that is closed and waits for one), for the next pass.
// was is the clock of the last pass, if it found the slot waiting too.
//
// A record's commit is usually microseconds behind its claim, so while a
// slot waits the host looks again at once and then at growing intervals
// (Drain). But a worker can claim and not commit, for free: one that never
// did kept the host passing 450 times a second (2.3% of a core) for as
// long as it lived, and one that commits and claims again every few
// milliseconds would restart those quick looks each time. So a slot is a
// reason to look again (pendLive) only while its waits without progress
// (the same record, pass after pass) add up to less than pendingStall
// within stallMemory. A stalled slot is still visited by every pass made
// for another reason, by its own doorbell (its worker's next claim rings
// it) and by the liveness checks, which also reclaim it if its worker
// dies: its record, once committed, waits for the next liveness check at
// most. The wait counted is from the last pass that found the slot
// waiting, however long ago: a record that waited across a Drain's
// restart or a liveness interval stalls the slot at once.
//
// res is the slot's reserve: a claim past the furthest seen while this
// record waits is the worker writing behind it (a goroutine stuck between
// claim and commit, its others going on), which wakes the host with
// nothing it can drain yet; pendMoved keeps such a wake-up from counting
// as one that found nothing (wokenIdle). The furthest mark belongs to the
// record (pendAt), not to one run of passes that found it waiting, and
// only rises: a scribbler moving reserve to and fro, or out of the ring's
// reach and back, gets at most a ring's worth of such wake-ups per record
// it holds (TestReserveScribblerStillAbuse).
func (h *Host) addPend(i int, hs *hslot, res uint64, was, now time.Time) {
	h.pend = append(h.pend, i)
	if now.Sub(hs.stallFrom) > stallMemory {
		hs.stallFrom, hs.stallSum = now, 0
	}
	switch {
	case hs.pendAt != hs.consumer: // progress: another record waits
		hs.pendAt, hs.pendHigh, h.pendMoved = hs.consumer, res, true
	case res-hs.consumer > hs.pendHigh-hs.consumer:
		hs.pendHigh, h.pendMoved = res, true
		fallthrough
	default:
		if !was.IsZero() {
			hs.stallSum += now.Sub(was)
		}
	}
	hs.pendSince = now
	if hs.stallSum < pendingStall {
		h.pendLive++
	}
}

// pass drains the slots whose doorbell rang and those the last pass left
// pending. With live (a liveness check) it also visits every bound slot
// and every slot being claimed, checks that their workers still run and
// refreshes their dropped counts and lag; with full it visits every slot.
// Taking a doorbell word (swap to 0) comes before reading any slot it
// covers, so a worker that rings after the swap rings again for the next
// pass, and one whose ring the swap took has its claim, definition or
// state change seen by this pass.
func (h *Host) pass(live, full bool, now time.Time) int {
	var ps passStats
	h.busiest = 0
	visit := h.visit[:0]
	mark := func(i int) {
		if hs := &h.slots[i]; !hs.marked {
			hs.marked = true
			visit = append(visit, i)
		}
	}
	suspicious := now.Before(h.suspectUntil)
	for k := 0; k < h.bells; k++ {
		h.rung[k] = 0
		p := u64(h.m, hdrBell+8*k)
		if atomic.LoadUint64(p) == 0 {
			continue // no write: the line stays shared with the workers
		}
		bits := atomic.SwapUint64(p, 0)
		if full {
			continue
		}
		if suspicious {
			h.suspect[k] |= bits &^ h.tracked[k]
			bits &= h.tracked[k]
		}
		h.rung[k] = bits
		for ; bits != 0; bits &= bits - 1 {
			// Bits past the file's slots (a scribble) are taken and ignored.
			if i := k*64 + mathbits.TrailingZeros64(bits); i < h.g.Slots {
				mark(i)
			}
		}
	}
	if suspicious && !full {
		n := 0
		for _, bits := range h.suspect {
			n += mathbits.OnesCount64(bits)
		}
		if n > 0 && (live || now.Sub(h.suspectSeen) >= max(suspectEvery, time.Duration(n)*suspectCost)) {
			h.suspectSeen = now
			for k, bits := range h.suspect {
				for ; bits != 0; bits &= bits - 1 {
					if i := k*64 + mathbits.TrailingZeros64(bits); i < h.g.Slots {
						mark(i)
					}
				}
				h.suspect[k] = 0
			}
		}
	}
	if full {
		clear(h.suspect) // visited now
	}
	freeRung := 0
	switch {
	case full:
		visit = visit[:0]
		for i := range h.slots {
			visit = append(visit, i)
		}
	case live:
		for k, bits := range h.tracked {
			for ; bits != 0; bits &= bits - 1 {
				mark(k*64 + mathbits.TrailingZeros64(bits))
			}
		}
		fallthrough
	default:
		for _, i := range h.pend {
			mark(i)
		}
	}
	if live {
		h.pollExits()
	}
	if len(visit) > 1 {
		h.touch(visit)
	}
	h.visits += uint64(len(visit))
	h.pend, h.pendLive, h.pendMoved = h.pend[:0], 0, false
	todo := h.todo[:0]
	for _, i := range visit {
		hs := &h.slots[i]
		hs.marked = false
		w := atomic.LoadUint64(h.slotU64(i, slotState))
		pid, gen, st := unpackState(w)
		hs.claiming = false
		switch st {
		case layout.StateFree:
			if hs.bound {
				h.unbind(i, hs)
			} else if h.rung[i/64]&(1<<(i%64)) != 0 {
				freeRung++
			}
			continue
		case layout.StateActive, layout.StateClosed:
		case layout.StateReclaiming:
			// A host died in the middle of reclaiming; finish its work.
			h.reset(i, w)
			continue
		case layout.StateClaiming:
			// A worker is scrubbing the slot it claimed; nothing is bound
			// until it is ACTIVE. One that died doing it leaves the slot
			// to be reclaimed.
			if hs.bound {
				h.unbind(i, hs)
			}
			// By pid alone: startTime is written after the scrub, and
			// until then holds whatever the FREE slot held.
			if live && !h.alive(pid, 0) {
				h.reset(i, w)
				h.self.reclaimed.Inc()
			} else {
				hs.claiming = true // liveness checks look at it until it is ACTIVE
			}
			continue
		default:
			ps.malformed++
			h.finish(i, hs, w, &ps)
			continue
		}
		if !hs.boundTo(pid, gen) {
			h.unbind(i, hs)
			*hs = hslot{bound: true, pid: pid, gen: gen}
			ring := h.g.SlotOff(i) + h.g.RingOffset
			populate(h.m, ring, ring+h.g.RingRecs*wire.RecordSize)
			h.recover(i, hs, &ps)
			h.loadDefs(i, hs)
			if st == layout.StateActive {
				h.watch(i, hs)
			}
		}
		// One rule on every pass: a closed slot still waiting for a
		// half-written record is not a worker.
		h.setActive(hs, st == layout.StateActive)
		todo = append(todo, slotWork{i, w, hs.consumer})
	}
	h.visit = visit
	h.todo = todo
	h.drainSlots(todo, &ps)
	for _, t := range todo {
		i, w, hs := t.i, t.w, &h.slots[t.i]
		h.busiest = max(h.busiest, int(hs.consumer-t.c0))
		was := hs.pendSince
		if !was.IsZero() {
			hs.pendSince = time.Time{}
		}
		pid, _, st := unpackState(w)
		// Metrics a worker defined but has not recorded yet appear within
		// a pass, as they would in an in-process registry (Client.define
		// rings the doorbell).
		h.loadDefs(i, hs)
		// A closed slot is reclaimed on the pass that finds it, not at the
		// next liveness check: short-lived workers must not wait for slots.
		if closed := st == layout.StateClosed || pid == 0; live || closed {
			if live {
				h.refresh(i, hs, &ps)
			}
			if closed || !h.running(i, hs) {
				if !h.finish(i, hs, w, &ps) {
					h.addPend(i, hs, hs.consumer, was, now) // a closed slot waiting for a record
				}
				continue
			}
		}
		if res := atomic.LoadUint64(h.slotU64(i, slotReserve)); res != hs.consumer && res-hs.consumer <= uint64(h.g.RingRecs) {
			h.addPend(i, hs, res, was, now) // claimed, not committed yet
		}
	}
	if freeRung >= suspectRings {
		// A worker rings FREE slots' bells: put off the bells of every
		// slot not bound or being claimed for a while.
		if !suspicious {
			h.log.Warn("shm: doorbells of free slots rang (a worker rings bells not its own); visiting such slots only every "+suspectEvery.String()+" or more while it goes on", "path", h.path, "slots", freeRung)
		}
		h.suspectUntil = now.Add(guardFor)
		ps.malformed++
	}
	// Binding, unbinding and claims change only slots this pass visited.
	for _, i := range visit {
		if hs, bit := &h.slots[i], uint64(1)<<(i%64); hs.bound || hs.claiming {
			h.tracked[i/64] |= bit
		} else {
			h.tracked[i/64] &^= bit
		}
	}
	h.more = ps.more
	s := &h.self
	if ps.events > 0 {
		s.events.Add(int64(ps.events))
	}
	if ps.malformed > 0 {
		s.malformed.Add(int64(ps.malformed))
	}
	if ps.discarded > 0 {
		s.discarded.Add(int64(ps.discarded))
	}
	if ps.aborted > 0 {
		s.aborted.Add(int64(ps.aborted))
	}
	if live || h.active != h.shown {
		// A worker that just attached is counted at once, not at the next
		// liveness check (which alone can tell that one has died).
		s.workers.Set(float64(h.active))
		h.shown = h.active
	}
	if live {
		s.lag.Set(float64(ps.lag))
	}
	return ps.events
}
