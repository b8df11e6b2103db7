package registry

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Per-P write-combining rings. A lock per record costs a locked CAS, which
// on the VMs tapes targets is 10 ns by itself (it waits for the store
// buffer to drain); the record path instead pins its P (runtime.procPin,
// as sync.Pool does), appends the value to that P's ring with plain
// stores, and unpins. Every reader (Snapshot, Count, Native, ...) drains
// every ring first, so reads are exact: a value recorded before a read is
// in it.
//
// A ring holds values and, beside them, runs: (histogram, half-window,
// first value) for each stretch of consecutive values of one histogram and
// half-window. The common case, a P recording into the histogram it
// recorded into last, stores one float64 and the tail: no pointer (so no
// write barrier), and the drain applies the values where they lie, without
// sorting them out first. A value of another histogram starts a run.
//
// The rings belong to the process, not to histograms: 256 values and 256
// runs per P that recorded (8 KiB), whatever the number of histograms, so
// a histogram's memory does not grow with the core count. A ring keeps the
// histogram of its last run reachable (it may still be appended to) until
// that P records into another one: at most one histogram per P.
const (
	ringBits = 8
	ringLen  = 1 << ringBits
)

type run struct {
	h     *Histogram
	end   int64  // of the values' half-window (Histogram.endAt)
	start uint64 // index of the run's first value
}

type ring struct {
	_ [64]byte
	// The producer's: written only by the goroutine that has the P pinned.
	tail   atomic.Uint64 // values pushed
	rtail  atomic.Uint64 // runs started
	lim    atomic.Uint64 // tail may grow up to lim without loading head
	rlim   atomic.Uint64 // rtail may grow up to rlim without loading rhead
	curH   histPtr       // runs[rtail-1]'s: a push of it appends to that run
	curEnd atomic.Int64
	_      [16]byte
	// The consumer's, written under mu.
	head  atomic.Uint64 // values applied
	rhead atomic.Uint64 // runs[rhead] is the run values[head] belongs to
	mu    sync.Mutex
	_     [40]byte
	vals  [ringLen]float64
	runs  [ringLen]run
}

var (
	rings   atomic.Pointer[[]*ring] // by P id
	ringsMu sync.Mutex
)

// put appends with the P pinned (Histogram.record writes its common case
// out); false when a limit is reached. The producer's fields are on one
// cache line, which stays on this core: head and rhead, written by
// readers, are loaded only when a cached limit is reached (see pushSlow).
func (r *ring) put(h *Histogram, v float64, end int64) bool {
	t := r.tail.Load()
	if t >= r.lim.Load() {
		return false
	}
	if h != r.curH.load() || end != r.curEnd.Load() {
		rt := r.rtail.Load()
		if rt >= r.rlim.Load() {
			return false
		}
		r.runs[rt&(ringLen-1)] = run{h: h, end: end, start: t}
		stRelaxed(&r.rtail, rt+1)
		r.curH.store(h)
		stRelaxedInt(&r.curEnd, end)
	}
	r.vals[t&(ringLen-1)] = v
	stRelaxed(&r.tail, t+1)
	return true
}

// pushSlow makes room (creating this P's ring, refreshing its limits, or
// applying its values) and pushes; it never waits with the P pinned, so a
// goroutine waiting for a lock cannot hold up a stop-the-world.
func pushSlow(h *Histogram, v float64, end int64) {
	for {
		pid := procPin()
		var r *ring
		if rs := rings.Load(); rs != nil && pid < len(*rs) {
			r = (*rs)[pid]
		}
		if r == nil {
			procUnpin()
			addRing(pid)
			continue
		}
		stRelaxed(&r.lim, r.head.Load()+ringLen)
		stRelaxed(&r.rlim, r.rhead.Load()+ringLen)
		if r.put(h, v, end) {
			procUnpin()
			return
		}
		procUnpin()
		r.drain()
	}
}

func addRing(pid int) {
	ringsMu.Lock()
	defer ringsMu.Unlock()
	var old []*ring
	if p := rings.Load(); p != nil {
		old = *p
	}
	if pid < len(old) && old[pid] != nil {
		return
	}
	rs := make([]*ring, max(len(old), pid+1, runtime.GOMAXPROCS(0)))
	copy(rs, old)
	rs[pid] = new(ring)
	rings.Store(&rs)
}

// drain applies the ring's values to their histograms.
func (r *ring) drain() {
	r.mu.Lock()
	defer r.mu.Unlock()
	h0 := r.head.Load()
	t := r.tail.Load()
	rt := r.rtail.Load() // after tail: every value below t has its run below rt
	k0 := r.rhead.Load()
	if h0 == t {
		return
	}
	// The runs holding values in [h0, t): k0 up to (excluding) k1.
	k1 := k0 + 1
	for k1 != rt && r.runs[k1&(ringLen-1)].start < t {
		k1++
	}
	if k1 == k0+1 {
		// One histogram since the last drain (the common case): apply the
		// values where they lie.
		rn := &r.runs[k0&(ringLen-1)]
		r.applyRange(rn.h, rn.end, h0, t)
	} else {
		r.gather(h0, t, k0, k1)
	}
	// runs[k1-1] may still be appended to: keep it unless a run started
	// at t already follows it. The ring keeps no other histogram alive.
	keep := k1 - 1
	if k1 != rt && r.runs[k1&(ringLen-1)].start == t {
		keep = k1
	}
	for k := k0; k != keep; k++ {
		r.runs[k&(ringLen-1)] = run{}
	}
	r.rhead.Store(keep)
	r.head.Store(t)
}

// applyRange applies values [from, to) (at most ringLen) where they lie.
func (r *ring) applyRange(h *Histogram, end int64, from, to uint64) {
	i, j := from&(ringLen-1), to&(ringLen-1)
	if j > i {
		h.apply(r.vals[i:j], end)
		return
	}
	h.apply(r.vals[i:], end) // wrapped (or all of the ring)
	if j > 0 {
		h.apply(r.vals[:j], end)
	}
}

// gather applies values [h0, t), held in runs k0..k1-1, per histogram and
// half-window, not per run: each apply takes a cell lock (a locked CAS,
// ~10 ns here), and a service recording into a few timers in turn writes
// runs of one value. It is a counting sort: one pass gives each run its
// group (the first maxGroups distinct histograms and half-windows; runs of
// any further one are applied one by one) and counts the groups' values,
// a second copies the values into one buffer, group after group, keeping
// their order within a group, instead of a scan of the remaining runs per
// group.
func (r *ring) gather(h0, t, k0, k1 uint64) {
	const maxGroups = 16
	type key struct {
		h   *Histogram
		end int64
	}
	const slotBits = 5 // 32 slots for at most 16 groups
	var (
		slot [1 << slotBits]uint8 // 1 + group, 0 if free
		keys [maxGroups]key
		cnt  [maxGroups]int
		gid  [ringLen]uint8 // by k-k0; maxGroups: applied alone
		ng   int
	)
	from := h0 // first value of run k
	for k := k0; k != k1; k++ {
		rn := &r.runs[k&(ringLen-1)]
		to := t
		if k+1 != k1 {
			to = r.runs[(k+1)&(ringLen-1)].start
		}
		// The group: a probe of a small hash table, not a search of the
		// groups (a few comparisons per run when histograms take turns).
		x := (uint64(uintptr(unsafe.Pointer(rn.h))) ^ uint64(rn.end)) * 0x9e3779b97f4a7c15 >> (64 - slotBits)
		for slot[x] != 0 && (keys[slot[x]-1].h != rn.h || keys[slot[x]-1].end != rn.end) {
			x = (x + 1) & (1<<slotBits - 1)
		}
		g := int(slot[x]) - 1
		if g < 0 {
			if ng == maxGroups {
				r.applyRange(rn.h, rn.end, from, to)
				gid[k-k0] = maxGroups
				from = to
				continue
			}
			g = ng
			keys[g] = key{rn.h, rn.end}
			slot[x] = uint8(g + 1)
			ng++
		}
		gid[k-k0] = uint8(g)
		cnt[g] += int(to - from)
		from = to
	}
	var off [maxGroups]int // where each group's next value goes in buf
	for g, n := 1, 0; g < ng; g++ {
		n += cnt[g-1]
		off[g] = n
	}
	var buf [ringLen]float64 // one array, not one per group: each is zeroed
	from = h0
	for k := k0; k != k1; k++ {
		to := t
		if k+1 != k1 {
			to = r.runs[(k+1)&(ringLen-1)].start
		}
		if g := gid[k-k0]; g != maxGroups {
			o := off[g]
			for i := from; i != to; i++ {
				buf[o&(ringLen-1)] = r.vals[i&(ringLen-1)]
				o++
			}
			off[g] = o
		}
		from = to
	}
	for g, o := 0, 0; g < ng; g++ {
		keys[g].h.apply(buf[o:o+cnt[g]], keys[g].end)
		o += cnt[g]
	}
}

// drainAll applies every ring; readers call it so that they see every
// value recorded before them.
func drainAll() {
	rs := rings.Load()
	if rs == nil {
		return
	}
	for _, r := range *rs {
		if r != nil && r.tail.Load() != r.head.Load() {
			r.drain()
		}
	}
}

// drainMine applies the current P's ring, so that values a goroutine
// records directly (UpdateMany) land after those it pushed before.
func drainMine() {
	pid := procPin()
	procUnpin()
	if rs := rings.Load(); rs != nil && pid < len(*rs) {
		if r := (*rs)[pid]; r != nil && r.tail.Load() != r.head.Load() {
			r.drain()
		}
	}
}
