//go:build !linux

package runtimemetrics

type processGauge struct {
	name string
	fn   func() float64
}

// processGauges has nothing to offer without /proc: the Go runtime set is
// still registered.
func processGauges() []processGauge { return nil }
