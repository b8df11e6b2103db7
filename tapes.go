// Package tapes is a metrics runtime for services that run as one process,
// as many worker processes, or with untrusted WebAssembly plugins. This
// package holds convenience functions over the default registry and the
// small handle interfaces that let application code run unchanged against
// the in-process registry and the shared-memory worker client (package shm);
// the Go guest SDK (package guest/tapesguest) has handles with the same
// methods but, to depend on package wire alone, its own Stopwatch.
//
//	defer tapes.Timer("my.http.latency").Time().Stop()
//	tapes.Counter("my.jobs.queued").Inc()
//	json.NewEncoder(w).Encode(tapes.Stats())
package tapes

import (
	"time"

	"github.com/tapes-go/tapes/registry"
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
// about where the events go.
type (
	CounterHandle interface {
		Inc()
		Dec()
		Add(n int64)
	}
	GaugeHandle interface {
		Set(v float64)
	}
	MeterHandle interface {
		Mark(n int64)
	}
	HistogramHandle interface {
		Update(v float64)
	}
	TimerHandle interface {
		Update(d time.Duration)
		UpdateSince(start time.Time)
		Time() registry.Stopwatch
		Func(f func())
	}
)

// Recorder hands out metric handles by name. The in-process registry (via
// On or Default) and the shm worker client implement it, so code written
// against Recorder runs in both. Its methods panic on
// invalid names, as the registry's convenience methods do.
type Recorder interface {
	Counter(name string) CounterHandle
	Gauge(name string, fn func() float64) GaugeHandle
	Meter(name string) MeterHandle
	Timer(name string) TimerHandle
	Histogram(name string) HistogramHandle
}

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
