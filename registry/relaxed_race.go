//go:build race

package registry

import "sync/atomic"

// See relaxed.go. Under the race detector the stores are atomic so that
// -race sees the synchronisation.

func stRelaxed(a *atomic.Uint64, v uint64) { a.Store(v) }

func unlock(a *atomic.Uint32) { a.Store(lkFree) }

func stRelaxedInt(a *atomic.Int64, v int64) { a.Store(v) }

type histPtr struct{ p atomic.Pointer[Histogram] }

func (a *histPtr) load() *Histogram { return a.p.Load() }

func (a *histPtr) store(h *Histogram) { a.p.Store(h) }
