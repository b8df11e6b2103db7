//go:build !race

package registry

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// On amd64 a sync/atomic store is a locked XCHG (2-10 ns on the VMs tapes
// targets, most of a record), and x86 does not reorder a store with
// earlier stores (TSO); the compiler keeps stores in program order. So
// where one goroutine publishes data it wrote with plain stores (a ring
// entry, then the tail; a cell's half-window, then the unlock), a plain
// store of the last word publishes it to a reader that loads that word
// atomically. Elsewhere, and under the race detector (relaxed_race.go),
// the stores are atomic.

// stRelaxed stores v into a word only the caller writes.
func stRelaxed(a *atomic.Uint64, v uint64) {
	if runtime.GOARCH == "amd64" {
		*(*uint64)(unsafe.Pointer(a)) = v
		return
	}
	a.Store(v)
}

// unlock releases a cell's lock word.
func unlock(a *atomic.Uint32) {
	if runtime.GOARCH == "amd64" {
		*(*uint32)(unsafe.Pointer(a)) = lkFree
		return
	}
	a.Store(lkFree)
}

func stRelaxedInt(a *atomic.Int64, v int64) {
	if runtime.GOARCH == "amd64" {
		*(*int64)(unsafe.Pointer(a)) = v
		return
	}
	a.Store(v)
}

// histPtr is a *Histogram only its ring's producer stores, and only that
// producer loads: an atomic for the race detector's sake (goroutines that
// pin the same P in turn are ordered, but it cannot see that), a plain
// store elsewhere on amd64 (the compiler still adds the GC's write barrier
// to a typed pointer store).
type histPtr struct{ p atomic.Pointer[Histogram] }

func (a *histPtr) load() *Histogram { return a.p.Load() }

func (a *histPtr) store(h *Histogram) {
	if runtime.GOARCH == "amd64" {
		*(**Histogram)(unsafe.Pointer(&a.p)) = h
		return
	}
	a.p.Store(h)
}
