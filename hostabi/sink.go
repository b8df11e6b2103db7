package hostabi

import (
	"fmt"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/wire"
)

// Sink is where a host module's guests define metrics and record events.
// RegistrySink records into a registry in this process (what Instantiate
// and NewPlugin with PluginConfig.Registry use); ClientSink records into a
// worker slot of a shm file, drained by a host in another process (what
// tapes-host's plugin processes use).
type Sink interface {
	// Define returns the metric of kind k called name (the plugin's prefix
	// already applied and the name validated by wire.ValidateName),
	// creating it if needed. The result must have its kind's record
	// method, as the registry's metric types and shm's handles do:
	// Add(int64) for a counter, Mark(int64) for a meter,
	// Update(time.Duration) for a timer, Update(float64) for a histogram,
	// Set(float64) for a gauge. A timer or histogram may also have the
	// registry's UpdateMany, used for runs of values in a batch. Errors
	// wrapping registry.ErrInvalidName, ErrKindConflict, ErrPrefixConflict
	// or ErrTooManyMetrics reach the guest as the matching wire.Status.
	Define(k wire.Kind, name string) (any, error)
}

// RegistrySink is the Sink that records into r.
func RegistrySink(r *registry.Registry) Sink { return registrySink{r} }

type registrySink struct{ r *registry.Registry }

func (s registrySink) Define(k wire.Kind, name string) (any, error) {
	return s.r.GetOrCreate(k, name)
}

// ClientSink is the Sink that records through c into its slot of a shm
// file. Gauges are defined with shm.GaugeLast, the registry gauge's Set
// semantics; like every value of a worker, the host drops them when the
// client's process ends.
func ClientSink(c *shm.Client) Sink { return clientSink{c} }

type clientSink struct{ c *shm.Client }

func (s clientSink) Define(k wire.Kind, name string) (any, error) {
	// Each Get returns a typed pointer, nil on error: return the error
	// alone so that the caller never holds a non-nil interface to nil.
	var m any
	var err error
	switch k {
	case wire.KindCounter:
		m, err = s.c.GetCounter(name)
	case wire.KindMeter:
		m, err = s.c.GetMeter(name)
	case wire.KindTimer:
		m, err = s.c.GetTimer(name)
	case wire.KindHistogram:
		m, err = s.c.GetHistogram(name)
	case wire.KindGauge:
		m, err = s.c.GetGauge(name, shm.GaugeLast, nil)
	default:
		return nil, fmt.Errorf("hostabi: kind %v", k)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// The record methods a Sink's metrics have, by kind.
type (
	counterSink   interface{ Add(int64) }
	meterSink     interface{ Mark(int64) }
	timerSink     interface{ Update(time.Duration) }
	histogramSink interface{ Update(float64) }
	gaugeSink     interface{ Set(float64) }
	// The registry's batch forms; other sinks get one Update per value.
	timerManySink     interface{ UpdateMany([]time.Duration) int }
	histogramManySink interface{ UpdateMany([]float64) }
)
