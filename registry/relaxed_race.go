//go:build race

package registry

import "sync/atomic"

// unlock: see relaxed.go. Under the race detector the release is atomic so
// that -race sees the lock.
func unlock(a *atomic.Uint32) { a.Store(lkFree) }
