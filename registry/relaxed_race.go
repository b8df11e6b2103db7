//go:build race

package registry

import "sync/atomic"

// stRelaxed: see relaxed.go. Under the race detector the single-writer
// stores are atomic so that -race reports real races only.
func stRelaxed(a *atomic.Uint64, v uint64) { a.Store(v) }

func stRelaxed32(a *atomic.Uint32, v uint32) { a.Store(v) }
