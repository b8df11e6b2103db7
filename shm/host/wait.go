// Drain's loop: when to pass, how to sleep until a worker rings (futex or
// the relay thread), and how wake-ups are coalesced.

package host

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tapes-go/tapes/shm/internal/relayhook"
	"github.com/tapes-go/tapes/shm/internal/uring"
)

// Drain applies the workers' events to the Host's registry until ctx ends, then drains what
// is committed once more and returns nil. A pass visits only the slots
// whose doorbell rang (docs/shm-layout.md, "The doorbell"), so its cost
// follows the events, not the number of slots. While a pass finds a ring
// with a backlog, the next follows at once; when events trickle in, the
// host sleeps in a futex wait that the next worker to record wakes (Linux),
// drains at once when woken after a quiet period, and when wake-ups come
// back to back it lets the events of a coalescing window (Config.CoalesceWindow, 1.5 ms) gather,
// with the wake flag down so that workers make no system calls, before its
// next pass, until a window finds none. The waits go through an io_uring
// that the Go netpoller watches (Linux 6.7; package shm/internal/uring),
// else, in a program that imports package shm/relay built with cgo, a
// thread of their own: a goroutine blocked in futex(2) costs the process
// several runtime wake-ups per event. Liveness checks, slot reclaim and the file's damage checks
// run on their own cadence (Config.LivenessInterval); a sleep never
// outlasts Config.MaxIdleSleep. See docs/RATIONALE.md, "Polling without burning a
// core". It returns an error only if the file becomes unusable (a
// *DamageError when it is truncated, shrunk, removed or replaced under the
// host: see checkFile) or r refuses the host's own metrics.
func (h *Host) Drain(ctx context.Context) error {
	h.mu.Lock()
	h.stopping = false
	h.mu.Unlock()
	// Cancellation must not wait for the futex timeout, nor, when it comes
	// between Drain's look at ctx and wait's raising of the word (which
	// would undo this wake), for the sleep's deadline: wait sees stopping.
	stop := context.AfterFunc(ctx, func() {
		h.mu.Lock()
		h.stopping = true
		if !h.closed {
			h.wakeLocked()
		}
		h.mu.Unlock()
	})
	defer stop()
	// The relay's thread lives while Drain runs (Close stops it too).
	defer func() {
		h.mu.Lock()
		if !h.closed {
			h.wakeLocked()
			h.stopRelay()
		}
		h.mu.Unlock()
	}()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	nap := func(d time.Duration) {
		t.Reset(d)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	coalescing := false
	var pace pacer
	var lastPass time.Time // when the last pass ended
	pendNap := time.Duration(0)
	var spinTill time.Time
	early := false // the last wait ended before its deadline: something woke it
	// When the last wait's sleep ended, if it slept: the clock of the pass
	// that follows. The clock is read once per step of a wake-up (as it
	// ends, after its pass, for Arm's deadline): nine reads per event were
	// 4% of a host's samples at 100 events/s.
	var woke time.Time
	// Drain's context ended, as the AfterFunc above records under h.mu,
	// which each round takes anyway: ctx.Err() in every round was a
	// microsecond per wake-up, the context's lines and code being cold.
	ended := ctx.Err() != nil
	for {
		if ended {
			_, err := h.drain(true)
			return err
		}
		at := woke
		if at.IsZero() {
			at = time.Now()
		}
		woke = time.Time{}
		n, err := h.drainAt(false, at)
		if err != nil {
			return err
		}
		now := time.Now()
		h.mu.Lock()
		ended = h.stopping
		more, pending, busiest := h.more, h.pendLive > 0, h.busiest
		if h.idlePass = n == 0 && !more && !pending && !h.pendMoved; !h.idlePass {
			h.idleRings = 0
		}
		if early {
			h.wakeFound(!h.idlePass || h.claimed, now)
			early = false
		}
		h.mu.Unlock()
		peak := pace.add(busiest, now)
		since := now.Sub(lastPass)
		lastPass = now
		if n > 0 {
			// Progress: a slot still pending is a worker writing, not one
			// stuck between claim and commit. (Keeping the naps of an
			// earlier stall let a worker writing flat out fill its ring:
			// BenchmarkTransportE2E/shm-default-ring lost 84% against 76%.)
			pendNap, spinTill = 0, time.Time{}
		}
		if n >= 256 || more {
			continue // a backlog: drain back to back, as fast as the workers write
		}
		// The busiest worker's pace (see pacer) would fill a quarter of its
		// ring within paceMemory: the next pass comes when it has, or after a
		// window, without the futex (a worker writing that fast rings at
		// its first record after each pass) and not on the worker's heels,
		// even over a record it has claimed and not yet committed (pending,
		// below: the next is always on its way). A ring must outlast the
		// nap several times over: on a loaded machine the next pass may
		// come late.
		if d := pacedNap(h.g.RingRecs, peak); d < paceMemory {
			d = min(d, h.coalesce)
			// Spun only behind a worker that just gave at least a quarter
			// of what the pace says it wrote since the last pass: a pace
			// remembered from a burst that stopped, or that goes on as a
			// record a pass, costs timer wake-ups (at most 1/minTimerNap a
			// second) for paceMemory, not a spinning core
			// (TestRememberedPaceNotChased).
			if d < minTimerNap && 4*float64(busiest) >= peak*since.Seconds() {
				chase(now, d)
			} else if err := h.window(d, nap); err != nil {
				return err
			}
			continue
		}
		if pending {
			// A record claimed but not committed yet, or a closed slot
			// waiting for one: usually a commit microseconds away (the
			// worker rang between its claim and its commit), so look again
			// at once for pendingSpin, then at growing intervals, since a
			// worker killed in between leaves it until its liveness check.
			if spinTill.IsZero() {
				spinTill = now.Add(pendingSpin)
			}
			if now.Before(spinTill) {
				runtime.Gosched()
				continue
			}
			pendNap = min(max(2*pendNap, pendingNap), maxPendingNap)
			nap(pendNap)
			continue
		}
		pendNap, spinTill = 0, time.Time{}
		if coalescing {
			// Events came back to back: let the next ones gather for a
			// window, with the wake flag down, so that workers make no
			// system calls, for as long as windows find events. The first
			// window with none ends it: below about one event per window
			// a futex wake-up per event costs less than the windows.
			// (Doubling the nap after an empty window, as before, kept a
			// host serving one worker at 100 events/s in timer naps,
			// about three wake-ups per event.)
			if n > 0 {
				if err := h.window(h.coalesce, nap); err != nil {
					return err
				}
				continue
			}
			coalescing = false
		}
		if !haveFutex {
			nap(time.Millisecond)
			continue
		}
		if testHookBeforeWait != nil {
			testHookBeforeWait()
		}
		woken, e, at, err := h.wait(now)
		if err != nil {
			return err
		}
		early, woke = e, at
		// Woken within a window of going to sleep (or without sleeping):
		// events come faster than one wake-up each is worth. Gather them
		// until a window passes with none.
		coalescing = woken && (at.IsZero() || at.Sub(now) < h.coalesce)
	}
}

// testHookBeforeWait runs in Drain just before each wait.
var testHookBeforeWait func()

// testHookChase runs as chase begins, with the time it will spin.
var testHookChase func(time.Duration)

// chase waits d from now without touching the file. A host that passes
// back to back behind workers writing flat out catches up with them and
// then reads every line they write as they write it: each read moves the
// line to the host's CPU and back at the worker's next store. Both slow
// down and the host stays on their heels (BenchmarkTransportE2E/shm fell
// to 21 M events/s at 94 CPU ns an event, from 105 M at 16.5 ns; see
// docs/RATIONALE.md, "Against the code issue 19 was filed on"). The gap is
// spun, yielding to the process's other goroutines: a Go timer shorter
// than a millisecond often sleeps one, and a 10-20 µs nanosleep lost more
// of a flat-out worker's events.
func chase(now time.Time, d time.Duration) {
	d = min(max(d, minChase), minTimerNap)
	if testHookChase != nil {
		testHookChase(d)
	}
	for time.Since(now) < d {
		runtime.Gosched()
	}
}

// pacer follows the busiest worker's pace: the records the busiest slot of
// each pass gave, over spans of at least paceSpan (over one burst a worker
// writing in bursts looks many times faster than it is: a span must hold
// several of a worker that writes a burst a millisecond), and the highest
// such pace within paceMemory, since workers writing flat out that were off
// the CPU for a pass come back at it.
type pacer struct {
	from time.Time // the span being measured began
	recs int       // records in it
	peak float64   // records a second
	at   time.Time // when peak was measured
}

// add counts a pass's busiest slot's records and returns the peak pace.
func (p *pacer) add(recs int, now time.Time) float64 {
	p.recs += recs
	if el := now.Sub(p.from); el >= paceSpan {
		r := float64(p.recs) / el.Seconds()
		if r >= p.peak || now.Sub(p.at) > paceMemory {
			p.peak, p.at = r, now
		}
		p.from, p.recs = now, 0
	}
	return p.peak
}

// pacedNap is how long a worker at pace (records a second) takes to fill
// a quarter of a ring of recs records.
func pacedNap(recs int, pace float64) time.Duration {
	if pace <= 0 {
		return time.Hour
	}
	// A ring of 2 or 3 records still gets a nap, and a pace measured
	// across a long sleep no overflowing duration.
	sec := float64(max(recs/4, 1)) / pace
	if sec >= time.Hour.Seconds() {
		return time.Hour
	}
	return time.Duration(sec * float64(time.Second))
}

// Pacing's bounds. A paced nap shorter than minTimerNap is spun (chase),
// at least minChase; a longer one is a tick of the relay's timer, rounded
// down to a power-of-two multiple of minTimerNap so that a pace that moves
// a little keeps the timer's period.
const (
	paceSpan    = 2 * time.Millisecond
	minChase    = 5 * time.Microsecond
	minTimerNap = 64 * time.Microsecond
)

// paceMemory is how long a pace is remembered: a worker writing flat out may
// be off the CPU for a few scheduler slices, then come back at it.
const paceMemory = 10 * time.Millisecond

// idleCheckEvery is the liveness interval of a host with no worker
// attached: each wake-up from the futex costs the process more than the
// check (the Go runtime's monitor thread polls for a while after it), and
// four a second were most of an idle host's CPU.
const idleCheckEvery = time.Second

// defaultCoalesce is how long a host woken back to back lets events gather
// before its next pass: the latency an event may wait under a steady
// trickle, traded for one pass and no wake-up system calls per window.
const defaultCoalesce = 1500 * time.Microsecond

// pendingSpin is how long the host passes back to back over a slot that
// holds a record claimed but not committed; pendingNap and maxPendingNap
// bound its sleeps after that. A timer sleep costs a wake-up of its own
// and, shorter than a millisecond, is often rounded up to one.
const (
	pendingSpin   = 50 * time.Microsecond
	pendingNap    = 50 * time.Microsecond
	maxPendingNap = 2 * time.Millisecond
)

// pendingStall is how long a slot's waits on uncommitted records may keep
// the host looking again within stallMemory (see addPend): far longer
// than a commit takes, and than a worker preempted between its claim and
// its commit on a busy machine usually stays off the CPU.
const (
	pendingStall = 20 * time.Millisecond
	stallMemory  = time.Second
)

// wait sleeps in futex wait on the header's hostWait word until a worker
// rings a doorbell (see Client.ringBell), the liveness interval or the
// maximum idle sleep passes, or Drain's context ends. The handshake is
// Dekker's: the host stores hostWait = 1 and then loads the doorbell words
// and claimWaits; a worker ORs its doorbell bit (or adds to claimWaits) and
// then loads hostWait. Both are full barriers, so either the host sees the
// bit and does not sleep, or the worker sees 1 and wakes it. A worker that
// finds its bit already set skips both: the bit's setter has done or will
// do this, and the host reads the slot after taking the bit.
//
// early reports that the sleep ended before its deadline: a wake-up, which
// Drain holds to account by what its next pass finds (wakeFound). now is
// the caller's clock (Drain's, read after its pass), and woke when the
// futex sleep ended (zero if it did not sleep on the futex): the clock of
// the next pass.
func (h *Host) wait(now time.Time) (woken, early bool, woke time.Time, err error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false, false, woke, ErrClosed
	}
	if h.stopping {
		h.mu.Unlock()
		return false, false, woke, nil
	}
	w := u32(h.m, hdrWait)
	if now.Before(h.guardUntil) {
		woken, err = h.guardedNap(w, h.idleNap(guardSleep))
		return woken, false, woke, err
	}
	busy := h.pendLive > 0
	claiming := false // a worker waits for a slot
	if !busy {
		err = h.protect(func() {
			atomic.StoreUint32(w, 1)
			claiming = atomic.LoadUint64(u64(h.m, hdrClaimWaits)) != h.seenWaits
			for k := 0; k < h.bells && !busy; k++ {
				busy = atomic.LoadUint64(u64(h.m, hdrBell+8*k)) != 0
			}
		})
	}
	if err != nil {
		err = h.damaged(err) // a fault here is damage like any other
		h.mu.Unlock()
		return false, false, woke, err
	}
	if busy && h.idlePass && h.pendLive == 0 {
		// Doorbells rang again, yet the pass just made found nothing:
		// honest rings come with work, and any worker can ring every
		// slot's bell in a loop, which made the host pass back to back
		// over all of them (4096 slots: 94% of a core). Past a few in a
		// row the next pass waits, with the word down, a window or 20
		// times what this one cost, whichever is longer
		// (tests.TestShmHostileWorkerCostBounded). Not at the first: an
		// idle pass amid workers writing flat out is a moment between
		// their batches, and a nap there, stretched by a pass the
		// scheduler preempted, halved BenchmarkTransportE2E/shm.
		if h.idleRings++; h.idleRings > idleRingsBeforeNap {
			woken, err = h.guardedNap(w, h.idleNap(h.coalesce))
			return woken, false, woke, err
		}
	}
	if claiming && !busy {
		if due, in := h.claimDue(now); !due {
			// The check it asks for is not due yet: nap until it is,
			// with the word down so that its wake-ups (and anyone's)
			// reach no one, instead of passing back to back until then.
			woken, err = h.guardedNap(w, min(guardSleep, in))
			return woken, false, woke, err
		}
		busy = true // the next pass checks
	}
	next, most := h.liveEvery, h.maxIdle
	if h.active == 0 {
		// No worker attached: nothing to check but the file itself, and a
		// worker that attaches rings and wakes the host.
		next, most = max(next, idleCheckEvery), max(most, idleCheckEvery)
	}
	d := min(most, max(0, next-now.Sub(h.lastLive)))
	if busy || d <= 0 {
		// Under the lock and the fault guard: Close may unmap, and the
		// file may be cut, the moment either is released.
		if err = h.protect(func() { atomic.StoreUint32(w, 0) }); err != nil {
			err = h.damaged(err)
		}
		h.mu.Unlock()
		return true, false, woke, err
	}
	if rl := h.startRelay(); rl != nil {
		// Armed under the lock: Close stops the relay under it too.
		rl.Arm(d)
		h.ticking = false
		h.mu.Unlock()
		err = rl.Await()
	} else {
		h.mu.Unlock()
		// A futex call on a page that is gone fails with EFAULT; it raises
		// no signal.
		futexSleep(w, 1, d)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false, false, time.Time{}, ErrClosed
	}
	// now came before the sleep began, so a sleep that ran to its
	// deadline never looks early.
	woke = time.Now()
	early = woke.Sub(now) < d
	if h.ringFailed(err) {
		err = nil // the word tells whether a worker woke the host
	}
	if err != nil {
		return false, false, woke, fmt.Errorf("shm: waiting for workers: %w", err)
	}
	err = h.protect(func() {
		// A worker that wakes the host clears the word first; a timeout
		// leaves it set.
		old := atomic.SwapUint32(w, 0)
		woken = old == 0
		switch {
		case old > 1:
			h.interfered(scribbled)
		case woken && !early:
			// Down, yet the sleep ran to its end: a waker's wake-up may
			// just be in flight, but three such sleeps in a row are a
			// worker storing 0 without waking the host.
			if h.silentZeros++; h.silentZeros >= 3 {
				h.interfered(scribbled)
			}
		default:
			h.silentZeros = 0
		}
		if woken || early {
			return
		}
		// Up, and the sleep ran to its end: a worker that rings while the
		// word is 1 wakes the host, and one that finds its bit already
		// set counts on the bit's setter to. A bell found rung now was
		// rung by a worker that did not (or whose wake-up is just in
		// flight): three such sleeps in a row are a worker keeping bells
		// set, which blinds the others' wake-ups as a scribbled word does
		// (TestDoorbellFlood).
		rang := false
		for k := 0; k < h.bells && !rang; k++ {
			rang = atomic.LoadUint64(u64(h.m, hdrBell+8*k)) != 0
		}
		if !rang {
			h.silentRings = 0
		} else if h.silentRings++; h.silentRings >= 3 {
			h.interfered(rangSilently)
		}
	})
	if err != nil {
		err = h.damaged(err)
	}
	return woken, early, woke, err
}

// idleRingsBeforeNap is how many times in a row bells may ring right after
// a pass that found nothing before the host naps between passes (see wait).
const idleRingsBeforeNap = 3

// maxBellNap bounds the nap after a pass that found nothing though bells
// rang (see wait): the latency the other workers' events may have while a
// worker rings every bell in a loop.
const maxBellNap = 100 * time.Millisecond

// idleNap is how long the host naps, with the word down, before its next
// pass when bells ring but the last pass found nothing (or while guarded):
// d, or claimScanRatio times what that pass cost, so that rings with
// nothing behind them, which any worker can make for every slot, cost the
// host at most about a twentieth of a core, bounded by maxBellNap. The
// caller holds h.mu.
func (h *Host) idleNap(d time.Duration) time.Duration {
	if !h.idlePass {
		return d
	}
	return max(d, min(maxBellNap, claimScanRatio*h.passCost))
}

// guardSleep is the host's nap for guardFor after a worker has written
// hostWait without waking it (see interfered).
const (
	guardSleep = 2 * time.Millisecond
	guardFor   = 10 * time.Second
)

// interfered: a worker abuses the host's wait word, so for guardFor the
// host naps guardSleep instead of waiting on it (guardedNap), and counts
// it as malformed. Three abuses, why names which:
//
//   - scribbled: the host found hostWait at a value no worker stores
//     (neither 0 nor 1), or at 0 when three sleeps in a row ran to their
//     end, which no waker leaves (it stores 0 and wakes the host at once).
//     One that keeps the word away from 1 while the host sleeps makes every
//     other worker's wake-up skip (they wake only a host whose word reads
//     1), so the host would see their events only at its timeout, up to 250
//     ms late; and a wait on a word kept at 2 ends at once, a busy loop
//     (TestHostWaitScribbled).
//   - rangSilently: three sleeps in a row ran to their end and then found
//     doorbells rung. A worker that finds its bit set skips its wake-up,
//     counting on the bit's setter, so one keeping bells set without waking
//     the host blinds the others as a scribbled word does
//     (TestDoorbellFlood).
//   - wokenIdle: more than emptyWakeLimit wake-ups in a second found
//     nothing to drain (wakeFound). A worker that stores 0 and calls
//     FUTEX_WAKE in a loop, or only the latter, took 65% of a core from the
//     host before this guard (TestHostWakeFlood).
//
// Either way the abuser then costs the host a few hundred passes a second,
// and the other workers none of their latency. The caller holds h.mu.
func (h *Host) interfered(why string) {
	h.silentZeros, h.silentRings = 0, 0
	h.emptyWakes, h.fullWakes = 0, 0
	h.self.malformed.Inc()
	now := time.Now()
	if !now.Before(h.guardUntil) {
		h.log.Warn("shm: "+why+"; sleeping at most "+guardSleep.String()+" while it goes on", "path", h.path)
	}
	h.guardUntil = now.Add(guardFor)
}

const (
	scribbled    = "the host's wait word was changed without a wake-up (a worker writes it)"
	rangSilently = "doorbells rang without a wake-up (a worker keeps them set)"
	wokenIdle    = "the host was woken again and again with nothing to drain (a worker wakes it in a loop)"
)

// emptyWakeLimit is how many wake-ups a second may find nothing to drain
// before the host takes them for abuse, provided they also outnumber the
// wake-ups that found work. An honest worker wakes the host only after
// ringing its doorbell, so a wake-up finds nothing only when the pass
// before it took the bit first (the worker was slow between its ring and
// its wake-up), a late wake-up (see shm/internal/uring, stale), or the
// host's own Close: rare next to the wake-ups that find the work, which is
// what the second condition allows for under heavy load. Below the limit
// an abuser costs the host at most ~100 passes a second (0.5% of a core
// on the 2-vCPU machine of docs/RATIONALE.md).
const emptyWakeLimit = 100

// wakeFound accounts a wake-up by what the pass after it found (a worker
// waiting for a slot counts: its wake-ups come at most one per claimDue).
// The caller holds h.mu.
func (h *Host) wakeFound(found bool, now time.Time) {
	if now.Sub(h.wakesFrom) >= time.Second {
		h.wakesFrom, h.emptyWakes, h.fullWakes = now, 0, 0
	}
	if found {
		h.fullWakes++
		return
	}
	if h.emptyWakes++; h.emptyWakes > emptyWakeLimit && h.emptyWakes > h.fullWakes {
		h.interfered(wokenIdle)
	}
}

// guardedNap is wait while the host is guarded, or waits to check for a
// worker waiting for a slot: it leaves the word at 0, as a coalescing
// window does, so that workers make no system call, naps d, and extends the
// guard if the word was written meanwhile (only a scribbler stores there
// now). It is called with h.mu held and returns with it released.
func (h *Host) guardedNap(w *uint32, d time.Duration) (bool, error) {
	if err := h.protect(func() { atomic.StoreUint32(w, 0) }); err != nil {
		err = h.damaged(err)
		h.mu.Unlock()
		return false, err
	}
	h.mu.Unlock()
	time.Sleep(d)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false, ErrClosed
	}
	err := h.protect(func() {
		if atomic.SwapUint32(w, 0) != 0 {
			h.interfered(scribbled)
		}
	})
	if err != nil {
		err = h.damaged(err)
	}
	return false, err
}

// wakeLocked makes a host asleep in wait return now: like a worker, it
// takes the word down before it wakes it, so that a wait about to start
// (the relay's, or futexSleep just after wait unlocked) returns at once
// instead of sleeping to its timeout. The caller holds h.mu.
func (h *Host) wakeLocked() {
	w := u32(h.m, hdrWait)
	_ = h.protect(func() { atomic.StoreUint32(w, 0) }) // a fault is damage the next pass reports
	futexWakeAll(w)
}

// startRelay returns the host's way to sleep outside the Go scheduler,
// started at the first call: an io_uring futex wait (Linux 6.7), else the
// relay thread when the program links shm/relay, else nil (futex(2) from
// the goroutine). The caller holds h.mu.
func (h *Host) startRelay() relayhook.Relay {
	if h.relay != nil || h.noRelay {
		return h.relay
	}
	w := u32(h.m, hdrWait)
	if !h.noRing {
		r, err := uring.Start(w)
		if err == nil {
			h.relay, h.via = r, "io_uring"
			return h.relay
		}
		h.noRing = true
		if relayhook.Start != nil {
			h.log.Info("shm: waiting for workers through the relay thread", "err", err)
		}
	}
	if relayhook.Start == nil {
		h.log.Warn("shm: waiting for workers from the Go scheduler (costs more CPU per wake-up): no io_uring futex wait and no relay in this build")
		h.noRelay = true
		return nil
	}
	r, err := relayhook.Start(w)
	if err != nil {
		h.log.Warn("shm: waiting for workers from the Go scheduler (costs more CPU per wake-up)", "err", err)
		h.noRelay = true
		return nil
	}
	h.relay, h.via = r, "relay"
	return h.relay
}

// window sleeps for a coalescing window or a paced nap of d, with
// hostWait left 0. With the relay it waits for the relay's next tick,
// which goes on every d until the next wait or another d: two thread
// wake-ups a window, where a Go timer reset and fired a window costs the
// runtime a few more (netpollBreak and spinning Ms: 200 workers at 100
// events/s, ~1000 windows a second), and a Go timer shorter than a
// millisecond often sleeps one. A d below the window is rounded down to a
// power-of-two multiple of minTimerNap, so that a pace that moves a little
// keeps the timer's period.
func (h *Host) window(d time.Duration, nap func(time.Duration)) error {
	if d < h.coalesce {
		q := minTimerNap
		for 2*q <= d {
			q *= 2
		}
		d = q
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	rl := h.startRelay()
	if rl != nil && (!h.ticking || h.tickEvery != d) {
		rl.Tick(d)
		h.ticking, h.tickEvery = true, d
	}
	h.mu.Unlock()
	if rl == nil {
		nap(d)
		return nil
	}
	if err := rl.Await(); err != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.closed {
			return ErrClosed
		}
		if h.ringFailed(err) {
			return nil // a window cut short: one more pass
		}
		return fmt.Errorf("shm: waiting for workers: %w", err)
	}
	return nil
}

// ringFailed reports whether err is the io_uring waiter failing after it
// started (a ring it could not set up on another thread: out of
// descriptors or memory); it then stops it, and the host's next sleep
// takes the next way down (the relay, or futex(2) from the goroutine):
// a way to sleep that fails must not end Drain. The caller holds h.mu.
func (h *Host) ringFailed(err error) bool {
	if !errors.Is(err, uring.ErrRing) {
		return false
	}
	h.log.Warn("shm: io_uring wait failed; waiting for workers another way", "err", err)
	h.stopRelay()
	h.noRing = true
	return true
}

// stopRelay ends the relay's thread, after wakeLocked. The caller holds h.mu.
func (h *Host) stopRelay() {
	if h.relay != nil {
		h.relay.Stop()
		h.relay, h.ticking = nil, false
	}
}

// unseen reports whether slot i has work the host's next pass will visit:
// its doorbell bit is set or the last pass left it pending (stalled or
// not; wait looks only at the bits and pendLive).
func (h *Host) unseen(i int) bool {
	if atomic.LoadUint64(u64(h.m, hdrBell+i/64*8))&(1<<(i%64)) != 0 {
		return true
	}
	return slices.Contains(h.pend, i)
}
