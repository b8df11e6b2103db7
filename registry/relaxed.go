//go:build !race

package registry

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// unlock releases a cell's lock word. On amd64 a sync/atomic store is a
// locked XCHG (2-7 ns, a third of a record); x86 stores are not reordered
// with earlier stores (TSO) and the compiler keeps stores in program order,
// so a plain store releases the lock with the ordering a lock needs: a
// writer that takes the lock next with its CAS sees every store made
// under it. Elsewhere, and under the race detector (relaxed_race.go), the
// store is atomic.
func unlock(a *atomic.Uint32) {
	if runtime.GOARCH == "amd64" {
		*(*uint32)(unsafe.Pointer(a)) = lkFree
		return
	}
	a.Store(lkFree)
}
