package hostabi

import (
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// Sink is where a host module's guests define metrics and record events.
// RegistrySink records into a registry in this process; plugin.ClientSink
// records into a worker slot of a shm file, drained by a host in another
// process (what tapes-host's plugin processes use).
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
