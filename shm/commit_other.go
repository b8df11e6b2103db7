//go:build !amd64 && !arm64

package shm

import (
	"sync/atomic"
	"unsafe"
)

// commit writes a record's value, then its first word with a sequentially
// consistent store, which is at least a release.
func commit(p unsafe.Pointer, w0, v uint64) {
	atomic.StoreUint64((*uint64)(unsafe.Add(p, 8)), v)
	atomic.StoreUint64((*uint64)(p), w0)
}
