package registry

import (
	"time"

	"github.com/tapes-go/tapes/wire"
)

// Timer measures durations: a Meter of how often they happen and a Histogram
// of how long they take, in seconds.
//
// Stats leaf (durations in seconds):
//
//	{"count": 1000, "m1": 16.2, "m5": 15.8, "m15": 15.1, "mean_rate": 15.9,
//	 "min": 0.0002, "max": 0.0971, "mean": 0.0113, "stddev": 0.008,
//	 "q50": 0.009, "q75": 0.014, "q95": 0.028, "q98": 0.039, "q99": 0.046, "q999": 0.088}
//
// The zero value is a usable timer.
//
// Performance tip: Update costs one coarse clock read and an append to the
// current P's ring (applied to the timer in runs, see Histogram); Time and
// UpdateSince add two time.Now calls, which on slow-clock machines cost
// more than the rest. Pass a duration you already measured to Update when
// you have one.
type Timer struct {
	h Histogram
	rates
}

// Update records one duration. A negative duration is ignored, as by
// Dropwizard's Timer: no clock measures one, and it would corrupt the
// quantiles and min. The same holds on every path into a registry: the shm
// client drops one before the ring (a forged record reaches UpdateMany on
// the host), and hostabi answers a guest's with StatusBadValue.
func (t *Timer) Update(d time.Duration) {
	if d < 0 {
		return
	}
	t.h.record(seconds(d), &t.rates)
}

// seconds is the value a timer records for d: a division, so that 1µs
// reads 1e-06 (as d.Seconds()), not 1.0000000000000002e-06. A duration is
// never NaN or infinite.
func seconds(d time.Duration) float64 { return float64(d) / 1e9 }

// UpdateMany records every duration of ds, as Update does for each,
// reading the clock once per 64 durations (see Histogram.UpdateMany for
// why it is faster). It returns how many it ignored as negative, so that a
// caller reporting them (hostabi) counts by this rule, not a copy of it.
func (t *Timer) UpdateMany(ds []time.Duration) (ignored int) {
	if len(ds) == 1 {
		t.Update(ds[0])
		if ds[0] < 0 {
			return 1
		}
		return 0
	}
	// Small enough that zeroing it costs less than the clock read and pin
	// it shares among its values.
	var buf [64]float64
	for len(ds) > 0 {
		n := min(len(ds), len(buf))
		j := 0
		for _, d := range ds[:n] {
			if d >= 0 {
				buf[j] = seconds(d)
				j++
			}
		}
		t.h.recordMany(buf[:j], &t.rates)
		ignored += n - j
		ds = ds[n:]
	}
	return ignored
}

// UpdateSince records the time elapsed since start.
func (t *Timer) UpdateSince(start time.Time) { t.Update(time.Since(start)) }

// Time starts a stopwatch whose Stop records the elapsed time:
//
//	defer t.Time().Stop()
func (t *Timer) Time() Stopwatch { return wire.StartStopwatch(t) }

// Func runs f and records how long it took.
func (t *Timer) Func(f func()) {
	start := time.Now()
	defer t.UpdateSince(start)
	f()
}

// Count returns the number of durations recorded since creation.
func (t *Timer) Count() uint64 { return t.h.Count() }

// Histogram returns the histogram of durations in seconds, for merging its
// Sketch or reading it alone. Do not record into it directly: the meter
// would not see those values.
func (t *Timer) Histogram() *Histogram { return &t.h }

// TimerSnapshot holds what a timer reports; durations are in seconds.
type TimerSnapshot struct {
	Rates MeterSnapshot
	HistogramSnapshot
}

// Snapshot reads the timer.
func (t *Timer) Snapshot() TimerSnapshot {
	now := nanosOf(t.h.clock)
	h := t.h.snapshotAt(now)
	return TimerSnapshot{Rates: t.read(now, int64(h.Count)), HistogramSnapshot: h}
}

// Kind returns KindTimer.
func (t *Timer) Kind() Kind { return KindTimer }

func (t *Timer) stats() map[string]any {
	s := t.Snapshot()
	return s.Rates.stats(s.HistogramSnapshot.stats(make(map[string]any, 15)))
}

// DurationRecorder is anything a Stopwatch can report to (wire's, named
// here too).
type DurationRecorder = wire.DurationRecorder

// Stopwatch is a started measurement; Stop records it. It is a value, so
// timing a block allocates nothing. It is wire.Stopwatch, defined there so
// that the shm client and the guest SDK share it without the registry.
type Stopwatch = wire.Stopwatch

// StartStopwatch starts a stopwatch reporting to u.
func StartStopwatch(u DurationRecorder) Stopwatch { return wire.StartStopwatch(u) }
