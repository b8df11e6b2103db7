package shm

import "fmt"

// GaugeMode says how the host combines the values that several workers give
// one gauge. It is chosen by the first worker that defines the gauge; a
// worker defining it later with another mode has its definition rejected by
// the host (counted in <prefix>.rejected).
type GaugeMode uint8

const (
	// GaugeSum reports the sum of the live workers' values (0 with none).
	GaugeSum GaugeMode = 1
	// GaugeMin reports the smallest live worker's value (0 with none).
	GaugeMin GaugeMode = 2
	// GaugeMax reports the largest live worker's value (0 with none).
	GaugeMax GaugeMode = 3
	// GaugeLast reports the value the host drained most recently from any
	// live worker; when that worker dies, the next most recent live one.
	GaugeLast GaugeMode = 4
	// GaugePerWorker reports one gauge per live worker, named
	// <name>.pid-<pid>; <name> itself becomes a path, not a metric.
	GaugePerWorker GaugeMode = 5

	// DefaultGaugeMode is the mode of gauges defined without one: summing
	// is right for the quantities gauges usually hold in a pre-forked
	// service (in-flight requests, open connections, queue depth, bytes).
	DefaultGaugeMode = GaugeSum
)

var modeNames = [...]string{"invalid", "sum", "min", "max", "last", "per-worker"}

func (m GaugeMode) String() string {
	if m.Valid() {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Valid reports whether m is one of the five modes.
func (m GaugeMode) Valid() bool { return m >= GaugeSum && m <= GaugePerWorker }
