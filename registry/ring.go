package registry

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Per-P write-combining rings. A lock per record costs a locked CAS, which
// on the VMs tapes targets is 10 ns by itself (it waits for the store
// buffer to drain); the record path instead pins its P (runtime.procPin,
// as sync.Pool does), appends (histogram, value, half-window) to that P's
// ring with plain stores, and unpins. A full ring is applied in runs: the
// consecutive entries of one histogram take its cell lock once. Every
// reader (Snapshot, Count, Native, ...) drains every ring first, so reads
// are exact: a value recorded before a read is in it.
//
// The rings belong to the process, not to histograms: 256 entries of 24
// bytes per P that recorded (6 KiB), whatever the number of histograms, so
// a histogram's memory does not grow with the core count.
const (
	ringBits = 8
	ringLen  = 1 << ringBits
)

type pending struct {
	h  *Histogram
	v  float64
	ep int64
}

type ring struct {
	_    [64]byte
	tail atomic.Uint64 // written only by the goroutine that has the P pinned
	_    [56]byte
	head atomic.Uint64 // written under mu
	mu   sync.Mutex    // held while applying
	e    [ringLen]pending
}

var (
	rings   atomic.Pointer[[]*ring] // by P id
	ringsMu sync.Mutex
)

// push appends to the current P's ring; false when the caller must call
// pushSlow (no ring yet for this P, or the ring is full).
func push(h *Histogram, v float64, ep int64) bool {
	pid := procPin()
	if rs := rings.Load(); rs != nil && pid < len(*rs) {
		if r := (*rs)[pid]; r != nil {
			t := r.tail.Load()
			if t-r.head.Load() < ringLen {
				e := &r.e[t&(ringLen-1)]
				e.h, e.v, e.ep = h, v, ep
				stRelaxed(&r.tail, t+1)
				procUnpin()
				return true
			}
		}
	}
	procUnpin()
	return false
}

// pushSlow makes room (creating this P's ring, or applying its entries)
// and pushes; it never waits with the P pinned, so a goroutine waiting
// for a lock cannot hold up a stop-the-world.
func pushSlow(h *Histogram, v float64, ep int64) {
	for !push(h, v, ep) {
		pid := procPin()
		procUnpin()
		var r *ring
		if rs := rings.Load(); rs != nil && pid < len(*rs) {
			r = (*rs)[pid]
		}
		if r == nil {
			addRing(pid)
			continue
		}
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

// drain applies the ring's entries to their histograms.
func (r *ring) drain() {
	r.mu.Lock()
	defer r.mu.Unlock()
	h0, t := r.head.Load(), r.tail.Load()
	// Each apply takes a cell lock (a locked CAS, ~10 ns here), so values
	// are applied per histogram and half-window, not per run of the ring:
	// a service recording into a few timers in turn writes runs of one
	// value. Gathering a group scans the rest of the ring, so only the
	// first maxGroups groups are gathered; past them a ring holding many
	// distinct histograms is applied run by run, as cheap as the scans it
	// saves. Order within a histogram is kept; across histograms it does
	// not matter.
	const maxGroups = 16
	var buf [ringLen]float64 // one array, not one per group: each is zeroed
	var done [ringLen / 64]uint64
	groups := 0
	for i := h0; i != t; i++ {
		k := i & (ringLen - 1)
		if done[k/64]&(1<<(k%64)) != 0 {
			continue
		}
		e := &r.e[k]
		h, ep := e.h, e.ep
		buf[0] = e.v
		n := 1
		gather := groups < maxGroups
		groups++
		for j := i + 1; j != t; j++ {
			kj := j & (ringLen - 1)
			f := &r.e[kj]
			if f.h != h || f.ep != ep || done[kj/64]&(1<<(kj%64)) != 0 {
				if gather {
					continue
				}
				break
			}
			done[kj/64] |= 1 << (kj % 64)
			buf[n] = f.v
			n++
		}
		h.apply(buf[:n], ep)
	}
	hd := t
	// The ring keeps no histogram alive: clear what was applied (one
	// bulk clear is cheaper than a nil store per entry).
	if i, j := h0&(ringLen-1), hd&(ringLen-1); hd-h0 == ringLen || j < i {
		clear(r.e[i:])
		clear(r.e[:j])
	} else {
		clear(r.e[i:j])
	}
	r.head.Store(hd)
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
