package registry

import "sync/atomic"

// Counter is a cumulative int64 that goes up and down.
//
// Stats leaf:
//
//	{"value": 42}
//
// The zero value is a usable counter at 0.
//
// Performance tip: a Counter is one atomic word. Under heavy parallel use
// from many cores every Inc writes the same cache line; for a hot per-request
// count prefer a Meter or Timer, whose cores write their own lines.
type Counter struct {
	v atomic.Int64
}

// Inc adds 1.
func (c *Counter) Inc() { c.v.Add(1) }

// Dec subtracts 1.
func (c *Counter) Dec() { c.v.Add(-1) }

// Add adds n, which may be negative.
func (c *Counter) Add(n int64) { c.v.Add(n) }

// Value returns the current value.
func (c *Counter) Value() int64 { return c.v.Load() }

// Kind returns KindCounter.
func (c *Counter) Kind() Kind { return KindCounter }

func (c *Counter) stats() map[string]any { return map[string]any{"value": c.Value()} }
