package registry

import (
	"math"
	"sync/atomic"
)

// Gauge is an instantaneous value: either the result of a producer function
// called on every read, or the last value given to Set.
//
// Stats leaf:
//
//	{"value": 3.5}
//
// The zero value is a settable gauge at 0.
type Gauge struct {
	fn   func() float64
	bits atomic.Uint64
}

// NewFuncGauge returns a gauge that calls fn on every read, outside any
// registry (hosts use it to build combined gauges before registering them).
func NewFuncGauge(fn func() float64) *Gauge { return &Gauge{fn: fn} }

// Set stores v. On a function gauge it has no visible effect: the function
// wins, as in tapes.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Value calls the producer function, if any, else returns the last Set value.
func (g *Gauge) Value() float64 {
	if g.fn != nil {
		return g.fn()
	}
	return math.Float64frombits(g.bits.Load())
}

// Kind returns KindGauge.
func (g *Gauge) Kind() Kind { return KindGauge }

func (g *Gauge) stats() map[string]any { return map[string]any{"value": g.Value()} }
