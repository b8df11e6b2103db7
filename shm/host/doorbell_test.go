package host

import (
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm/internal/layout"
	"github.com/tapes-go/tapes/wire"
)

// Every change a host must see rings the slot's doorbell: the claim, a
// definition, the first record after a pass took the bit, and Close. A
// record while the bit is still set leaves it alone (one load, no write),
// and a pass that visits only rung slots leaves a slot whose worker rang
// nothing untouched, until the full scan of a liveness check.
func TestDoorbell(t *testing.T) {
	h := newHost(t, Config{Slots: 70, RingRecords: 64}) // two doorbell words
	r := h.Registry()
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	var cs []*Client
	for i := 0; i < 66; i++ {
		c, err := Open(h.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !c.rung() {
			t.Fatalf("slot %d: Open did not ring", c.Slot())
		}
		cs = append(cs, c)
	}
	c := cs[65] // in the second word
	// Slot i's bit is bit i%64 of word i/64, and nothing else rang: the
	// 66 claims set exactly the first 66 bits.
	if w0, w1 := atomic.LoadUint64(u64(h.m, hdrBell)), atomic.LoadUint64(u64(h.m, hdrBell+8)); w0 != 1<<64-1 || w1 != 0b11 || c.Slot() != 65 {
		t.Fatalf("after 66 claims the doorbell words are %#x %#x (slot %d last), want every bit of the first and two of the second", w0, w1, c.Slot())
	}
	pass := func() {
		t.Helper()
		if _, err := h.drain(false); err != nil {
			t.Fatal(err)
		}
		if c.rung() {
			t.Fatal("a pass left the bit set")
		}
	}
	pass()
	if got, _ := r.Get(DefaultPrefix + ".workers"); got.(*registry.Gauge).Value() != 66 {
		t.Fatalf("workers = %v after the claims rang, want 66", got.(*registry.Gauge).Value())
	}
	ctr := c.Counter("bell.n")
	if !c.rung() {
		t.Fatal("a definition did not ring")
	}
	pass()
	if _, ok := r.Get("bell.n"); !ok {
		t.Fatal("the pass did not read the definition")
	}
	ctr.Inc()
	if !c.rung() {
		t.Fatal("a record did not ring")
	}
	w0 := atomic.LoadUint64(c.bell)
	ctr.Inc()
	if atomic.LoadUint64(c.bell) != w0 {
		t.Fatal("a record rang again before the host took the bit")
	}
	pass()
	if v := r.Counter("bell.n").Value(); v != 2 {
		t.Fatalf("bell.n = %d, want 2", v)
	}
	// A client that skips the doorbell: its record waits for a full scan.
	ctr.Inc()
	atomic.AndUint64(c.bell, ^c.bit)
	pass()
	if v := r.Counter("bell.n").Value(); v != 2 {
		t.Fatalf("a pass drained a slot that did not ring: bell.n = %d", v)
	}
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if v := r.Counter("bell.n").Value(); v != 3 {
		t.Fatalf("the full scan missed the record: bell.n = %d", v)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if !c.rung() {
		t.Fatal("Close did not ring")
	}
	pass()
	if _, _, st := unpackState(atomic.LoadUint64(u64(h.m, h.g.SlotOff(c.Slot())+slotState))); st != layout.StateFree {
		t.Fatalf("the closed slot is in state %d after the pass its Close rang for", st)
	}
	// Bits past the file's slots (a scribble) are taken and ignored.
	atomic.OrUint64(c.bell, 1<<63)
	pass()
	if atomic.LoadUint64(c.bell) != 0 {
		t.Fatal("a scribbled bit past the last slot stayed set")
	}
}

// A worker rings after its claim CAS and commits after: a pass can take
// the bit and find the record not committed yet. The slot then stays in
// the host's pending set, and the record is drained without another ring.
// Without the pending set this host would sleep for the hour it is given.
func TestPendingClaimDrained(t *testing.T) {
	h, c, stop := sleepingWorker(t, Config{Slots: 2, RingRecords: 64})
	id, err := c.Define(wire.KindCounter, "pend.n")
	if err != nil {
		t.Fatal(err)
	}
	r := h.Registry()
	// put, cut in two: claim and ring, ...
	res := atomic.LoadUint64(c.reserve)
	if !atomic.CompareAndSwapUint64(c.reserve, res, res+1) {
		t.Fatal("claim failed")
	}
	c.ringBell()
	waitFor(t, "a pass to take the bit", 10*time.Second, func() bool { return !c.rung() })
	time.Sleep(5 * time.Millisecond) // the host finds nothing committed and naps
	// ... and commit, with no ring.
	commit(unsafe.Add(c.ring, (res&c.mask)*wire.RecordSize), wire.Word0(id, wire.KindCounter), 7)
	waitFor(t, "the pending record", 10*time.Second, func() bool { return r.Counter("pend.n").Value() == 7 })
	// Nothing pending any more: the host goes back to its futex sleep.
	waitFor(t, "the host to sleep again", 10*time.Second, func() bool { return atomic.LoadUint32(u32(h.m, hdrWait)) == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// Liveness of a bound worker is a pidfd, polled at every check, when the
// host can have one; a worker whose start time does not match (its pid
// reused) gets none and is judged through /proc, which reclaims it.
func TestLivenessByPidfd(t *testing.T) {
	h := newHost(t, Config{Slots: 2, RingRecords: 16})
	r := h.Registry()
	c, err := Open(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if h.slots[c.Slot()].pidfd == 0 || h.pidfds != 1 {
		t.Fatalf("no pidfd for a live worker (pidfds %d)", h.pidfds)
	}
	// The same pid with another start time: a reused pid.
	atomic.AddUint64(u64(h.m, h.g.SlotOff(c.Slot())+slotStart), 77)
	gen := c.gen + 1
	atomic.StoreUint64(u64(h.m, h.g.SlotOff(c.Slot())+slotState), packState(c.pid, gen, layout.StateActive))
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if got := r.Counter(DefaultPrefix + ".reclaimed").Value(); got != 1 {
		t.Fatalf("reclaimed = %d, want the reused pid's slot", got)
	}
	if h.pidfds != 0 {
		t.Fatalf("%d pidfds left open", h.pidfds)
	}
}

// A worker that claims a record and does not commit it, or commits and
// claims again every few milliseconds, must not keep the host looking
// again: that costs it nothing and cost the host 450 passes a second, 2.3%
// of a core, for as long as it went on. Its records still arrive: a
// stalled slot is visited by its own doorbell and every liveness check.
func TestStalledClaimsCostTheHostNothing(t *testing.T) {
	const live = 100 * time.Millisecond
	h, c, stop := sleepingWorker(t, Config{Slots: 2, RingRecords: 64}, WithLivenessInterval(live))
	id, err := c.Define(wire.KindCounter, "stall.n")
	if err != nil {
		t.Fatal(err)
	}
	r := h.Registry()
	claim := func() uint64 {
		res := atomic.LoadUint64(c.reserve)
		if !atomic.CompareAndSwapUint64(c.reserve, res, res+1) {
			t.Fatal("claim failed")
		}
		c.ringBell()
		return res
	}
	commitAt := func(res uint64, v uint64) {
		commit(unsafe.Add(c.ring, (res&c.mask)*wire.RecordSize), wire.Word0(id, wire.KindCounter), v)
	}

	// Claimed, never committed.
	res := claim()
	time.Sleep(2 * pendingStall)
	p0, t0 := h.Passes(), time.Now()
	time.Sleep(time.Second)
	passes, took := h.Passes()-p0, time.Since(t0)
	if limit := 3 * uint64(took/live); passes > limit {
		t.Errorf("%d passes in %v beside a record claimed and never committed, want at most %d (liveness checks)", passes, took, limit)
	}
	commitAt(res, 1) // no ring: a liveness check finds it
	waitFor(t, "the record committed after its stall", 10*time.Second, func() bool { return r.Counter("stall.n").Value() == 1 })

	// Committed 10 ms after each claim (less than pendingStall), claimed
	// again at once: after the first few (pendingStall of quick looks,
	// spun at first), one pass for each claim's ring. Past the stall
	// memory of the above first.
	time.Sleep(stallMemory + live)
	claims := 0
	episode := func() {
		res := claim()
		time.Sleep(10 * time.Millisecond)
		commitAt(res, 1)
		claims++
	}
	for t0 := time.Now(); time.Since(t0) < 5*pendingStall; {
		episode()
	}
	p0, t0 = h.Passes(), time.Now()
	c0 := claims
	for time.Since(t0) < stallMemory*8/10 {
		episode()
	}
	passes, took = h.Passes()-p0, time.Since(t0)
	t.Logf("%d passes beside %d claims each committed 10 ms later, in %v", passes, claims-c0, took)
	if limit := 3*uint64(claims-c0) + 3*uint64(took/live); passes > limit {
		t.Errorf("%d passes beside %d claims each committed 10 ms later, in %v; want at most %d", passes, claims-c0, took, limit)
	}
	waitFor(t, "every record", 10*time.Second, func() bool { return r.Counter("stall.n").Value() == int64(1+claims) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// A worker with one record stuck between claim and commit (a goroutine
// preempted there on a busy machine) while its other goroutines go on
// writing: each of their claims rings and wakes the host, whose pass finds
// nothing it can drain yet. Those are a worker's work, not a worker waking
// the host for nothing: no abuse is counted, and every record arrives.
func TestStalledSlotClaimsAreNotAbuse(t *testing.T) {
	h, c, stop := sleepingWorker(t, Config{Slots: 2, RingRecords: 4096}, WithLivenessInterval(250*time.Millisecond))
	id, err := c.Define(wire.KindCounter, "behind.n")
	if err != nil {
		t.Fatal(err)
	}
	r := h.Registry()
	word0 := wire.Word0(id, wire.KindCounter)
	ctr := c.Counter("behind.n")
	stuck := atomic.LoadUint64(c.reserve)
	if !atomic.CompareAndSwapUint64(c.reserve, stuck, stuck+1) {
		t.Fatal("claim failed")
	}
	c.ringBell()
	sent := 0
	for t0 := time.Now(); time.Since(t0) < 1200*time.Millisecond; sent++ {
		ctr.Inc() // claims, rings when the bit is clear, commits
		time.Sleep(2 * time.Millisecond)
	}
	commit(unsafe.Add(c.ring, (stuck&c.mask)*wire.RecordSize), word0, 1)
	waitFor(t, "every record", 10*time.Second, func() bool { return r.Counter("behind.n").Value() == int64(sent+1) })
	if n := r.Counter(DefaultPrefix + ".malformed").Value(); n != 0 {
		t.Errorf("%d abuses counted beside a worker writing behind its own stuck record", n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// A scribbler holds a record claimed and never committed, then moves
// reserve past it, out of the ring's reach (the slot is then not pending
// for a pass) and back, ringing and waking the host each time. Claims past
// a stalled record count as work found only up to a ring's worth per
// record: after that the wake-ups are what they are, for nothing, and the
// host takes them for abuse (before, each return into the ring started
// the count afresh, and the host passed at every wake-up it was sent).
func TestReserveScribblerStillAbuse(t *testing.T) {
	const ring = 64
	h, c, stop := sleepingWorker(t, Config{Slots: 2, RingRecords: ring}, WithLivenessInterval(250*time.Millisecond))
	r := h.Registry()
	stuck := atomic.LoadUint64(c.reserve)
	atomic.StoreUint64(c.reserve, stuck+1)
	c.ringBell()
	time.Sleep(2 * pendingStall)
	for k, t0 := 0, time.Now(); time.Since(t0) < 2*time.Second; k++ {
		atomic.StoreUint64(c.reserve, stuck+1+uint64(k%(ring+2)))
		c.ringBell()
		time.Sleep(100 * time.Microsecond)
	}
	if n := r.Counter(DefaultPrefix + ".malformed").Value(); n == 0 {
		t.Errorf("a worker moving reserve to and fro past a stuck record, waking the host each time, was not taken for an abuser")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
