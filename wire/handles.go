package wire

import "time"

// The handle interfaces: what application code needs to record, and nothing
// about where the events go. They live here, beside the record format, so
// that every recorder (the in-process registry, the shm worker client, the
// guest SDK) implements them without importing the registry; the root
// package tapes names them too (type aliases), which is where application
// code usually finds them.
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
		Time() Stopwatch
		Func(f func())
	}
)

// Recorder hands out metric handles by name. The in-process registry (via
// tapes.On or tapes.Default) and the shm worker client implement it, so
// code written against Recorder runs in both. Its methods panic on invalid
// names, as the registry's convenience methods do.
type Recorder interface {
	Counter(name string) CounterHandle
	Gauge(name string, fn func() float64) GaugeHandle
	Meter(name string) MeterHandle
	Timer(name string) TimerHandle
	Histogram(name string) HistogramHandle
}

// DurationRecorder is anything a Stopwatch can report to: the registry's
// *Timer, and the timer handles of the shm client and the guest SDK.
type DurationRecorder interface {
	Update(time.Duration)
}

// Stopwatch is a started measurement; Stop records it. It is a value, so
// timing a block allocates nothing (as long as u is a pointer, which fits
// the interface without boxing).
type Stopwatch struct {
	u     DurationRecorder
	start time.Time
}

// StartStopwatch starts a stopwatch reporting to u.
func StartStopwatch(u DurationRecorder) Stopwatch { return Stopwatch{u: u, start: time.Now()} }

// Stop records the time elapsed since the stopwatch started and returns it.
// Stopping a zero Stopwatch does nothing.
func (s Stopwatch) Stop() time.Duration {
	if s.u == nil {
		return 0
	}
	d := time.Since(s.start)
	s.u.Update(d)
	return d
}
