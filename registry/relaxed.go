//go:build !race

package registry

import (
	"sync/atomic"
	"unsafe"
)

// stRelaxed stores v into a field whose only writer is the caller (a shard
// written by the goroutine that has its P pinned). On amd64 every
// sync/atomic store is a locked XCHG, 2-7 ns each and the bulk of a record;
// a single writer needs no read-modify-write and no fence, only that
// concurrent readers never see a torn word. Go's memory model guarantees
// exactly that for aligned word-sized accesses ("a read of a memory
// location not larger than a machine word observes some write"), and
// readers use atomic loads. On 32-bit platforms a uint64 is two words, so
// there the store stays atomic (the condition is a constant, folded away).
// The race detector cannot know there is one writer, so race builds use
// atomic stores instead (relaxed_race.go).
func stRelaxed(a *atomic.Uint64, v uint64) {
	if unsafe.Sizeof(uintptr(0)) == 8 {
		*(*uint64)(unsafe.Pointer(a)) = v
		return
	}
	a.Store(v)
}

// stRelaxed32 is stRelaxed for a uint32, a single word on every platform.
func stRelaxed32(a *atomic.Uint32, v uint32) { *(*uint32)(unsafe.Pointer(a)) = v }
