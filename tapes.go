// Package tapes is a metrics runtime for services that run as one process,
// as many worker processes, or with untrusted WebAssembly plugins. This
// package holds convenience functions over the default registry and the
// small handle interfaces that let application code run unchanged against
// the in-process registry and the shared-memory worker client (package shm);
// the Go guest SDK (package guest/tapesguest) has handles with the same
// methods. The interfaces are defined in package wire (which imports no
// registry) and named here by aliases.
//
//	defer tapes.Timer("my.http.latency").Time().Stop()
//	tapes.Counter("my.jobs.queued").Inc()
//	json.NewEncoder(w).Encode(tapes.Stats())
package tapes

import (
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// Counter returns the default registry's counter called name, creating it if
// needed. Like every function here it panics on an invalid name or a kind
// conflict, which are programming errors; see registry.GetOrCreate for names
// that come from elsewhere.
func Counter(name string) *registry.Counter { return registry.Default.Counter(name) }

// Meter returns the default registry's meter called name.
func Meter(name string) *registry.Meter { return registry.Default.Meter(name) }

// Timer returns the default registry's timer called name.
func Timer(name string) *registry.Timer { return registry.Default.Timer(name) }

// Histogram returns the default registry's histogram called name.
func Histogram(name string) *registry.Histogram { return registry.Default.Histogram(name) }

// Gauge returns the default registry's gauge called name; fn, if not nil, is
// called on every read.
func Gauge(name string, fn func() float64) *registry.Gauge { return registry.Default.Gauge(name, fn) }

// Stats returns the default registry's nested stats tree (see
// registry.Registry.Stats, also for gauges that return NaN).
func Stats() map[string]any { return registry.Default.Stats() }

// Bind fills the tagged metric fields of *ptr from the default registry.
func Bind(ptr any) error { return registry.Default.Bind(ptr) }

// The handle interfaces: what application code needs to record, and nothing
// about where the events go. They are package wire's (aliases, so a value
// of one is a value of the other), defined there so that the shm worker
// client and the guest SDK implement them without importing the registry.
type (
	CounterHandle   = wire.CounterHandle
	GaugeHandle     = wire.GaugeHandle
	MeterHandle     = wire.MeterHandle
	HistogramHandle = wire.HistogramHandle
	TimerHandle     = wire.TimerHandle
	// Recorder hands out metric handles by name. The in-process registry
	// (via On or Default) and the shm worker client implement it, so code
	// written against Recorder runs in both. Its methods panic on invalid
	// names, as the registry's convenience methods do.
	Recorder = wire.Recorder
)

// On returns a Recorder over r.
func On(r *registry.Registry) Recorder { return registryRecorder{r} }

// Default returns a Recorder over the default registry.
func Default() Recorder { return registryRecorder{registry.Default} }

type registryRecorder struct{ r *registry.Registry }

func (a registryRecorder) Counter(name string) CounterHandle { return a.r.Counter(name) }
func (a registryRecorder) Gauge(name string, fn func() float64) GaugeHandle {
	return a.r.Gauge(name, fn)
}
func (a registryRecorder) Meter(name string) MeterHandle         { return a.r.Meter(name) }
func (a registryRecorder) Timer(name string) TimerHandle         { return a.r.Timer(name) }
func (a registryRecorder) Histogram(name string) HistogramHandle { return a.r.Histogram(name) }
