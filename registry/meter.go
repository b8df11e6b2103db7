package registry

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Meter counts events and their rate: events per second, exponentially
// weighted over the last 1, 5 and 15 minutes, and the mean since creation.
//
// Stats leaf:
//
//	{"count": 1200, "m1": 4.1, "m5": 3.9, "m15": 3.7, "mean_rate": 3.8}
//
// The zero value is a usable meter; its clock starts at the first Mark or
// read. A registry's meters start theirs at creation, as tapes' did.
//
// The rates follow tapes exactly: every 5 seconds a tick folds the events of
// the tick into each average with alpha = 1-exp(-5s/N minutes), and the
// first tick sets each average to the instant rate. Ticks are caught up
// lazily when the meter is marked or read (no goroutine per meter); all
// events waiting since the last tick go into the first caught-up tick.
// Unlike tapes, a long idle period is caught up in O(1) (closed form for the
// zero ticks), and a rate that decays below MinRate reads exactly 0.
//
// Performance tip: Mark reads the process-wide coarse clock (one atomic
// load), not time.Now, so it costs about as much as two atomic adds.
type Meter struct {
	count atomic.Int64
	clock Clock
	rates
}

// Rate constants of tapes.
const (
	TickInterval = 5 * time.Second
	// MinRate is the smallest rate reported; below it a decaying average
	// reads 0 instead of lingering at 1e-300 forever.
	MinRate = 1e-9
)

var (
	alpha1  = 1 - math.Exp(-5.0/60/1)
	alpha5  = 1 - math.Exp(-5.0/60/5)
	alpha15 = 1 - math.Exp(-5.0/60/15)
)

// Mark records n events.
func (m *Meter) Mark(n int64) {
	now := nanosOf(m.clock)
	if m.due(now) {
		m.tick(now, m.count.Load())
	}
	m.count.Add(n)
}

// Count returns the number of events marked.
func (m *Meter) Count() int64 { return m.count.Load() }

// Kind returns KindMeter.
func (m *Meter) Kind() Kind { return KindMeter }

// MeterSnapshot holds a meter's (or a timer's) count and rates.
type MeterSnapshot struct {
	Count    int64
	M1       float64 // events/s, 1-minute exponentially weighted
	M5       float64
	M15      float64
	MeanRate float64 // events/s since the first event or read
}

// Snapshot reads the count and rates, catching up ticks first.
func (m *Meter) Snapshot() MeterSnapshot {
	return m.read(nanosOf(m.clock), m.count.Load())
}

func (m *Meter) stats() map[string]any { return m.Snapshot().stats(nil) }

func (s MeterSnapshot) stats(into map[string]any) map[string]any {
	if into == nil {
		into = make(map[string]any, 5)
	}
	into["count"] = s.Count
	into["m1"] = s.M1
	into["m5"] = s.M5
	into["m15"] = s.M15
	into["mean_rate"] = s.MeanRate
	return into
}

// rates is the EWMA state shared by Meter and Timer. Only lastTick is read
// on the record path; the rest is guarded by mu and touched once per tick.
type rates struct {
	lastTick atomic.Int64 // ns; 0 until the first mark or read

	mu          sync.Mutex
	start       int64
	counted     int64 // count already folded into the averages
	initialized bool
	m1, m5, m15 float64
}

// due reports whether a tick is due at now, or the clock has not started.
func (r *rates) due(now int64) bool {
	last := r.lastTick.Load()
	return last == 0 || now-last > int64(TickInterval)
}

// start starts the clock at now if it has not started; registries call it
// at creation so that, as in tapes, the first tick and mean_rate count from
// then.
func (r *rates) startAt(now int64) {
	if r.lastTick.Load() == 0 {
		r.tick(now, 0)
	}
}

// tick catches up every whole TickInterval elapsed since the last tick.
// count is the meter's cumulative count before the caller's own events.
func (r *rates) tick(now, count int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	last := r.lastTick.Load()
	if last == 0 {
		r.start = now
		r.counted = count
		r.lastTick.Store(max(now, 1)) // 0 means not started
		return
	}
	age := now - last
	if age <= int64(TickInterval) {
		return // another goroutine ticked first
	}
	ticks := age / int64(TickInterval)
	// Keep the grid aligned, as tapes does: the next tick is due a whole
	// number of intervals after the first one.
	r.lastTick.Store(now - age%int64(TickInterval))
	instant := float64(count-r.counted) / TickInterval.Seconds()
	r.counted = count
	if !r.initialized {
		r.m1, r.m5, r.m15 = instant, instant, instant
		r.initialized = true
	} else {
		r.m1 += alpha1 * (instant - r.m1)
		r.m5 += alpha5 * (instant - r.m5)
		r.m15 += alpha15 * (instant - r.m15)
	}
	if zero := float64(ticks - 1); zero > 0 {
		r.m1 *= math.Pow(1-alpha1, zero)
		r.m5 *= math.Pow(1-alpha5, zero)
		r.m15 *= math.Pow(1-alpha15, zero)
	}
	r.m1, r.m5, r.m15 = floor(r.m1), floor(r.m5), floor(r.m15)
}

func floor(v float64) float64 {
	if v < MinRate {
		return 0
	}
	return v
}

func (r *rates) read(now, count int64) MeterSnapshot {
	if r.due(now) {
		r.tick(now, count)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := MeterSnapshot{Count: count, M1: r.m1, M5: r.m5, M15: r.m15}
	if el := time.Duration(now - r.start).Seconds(); el > 0 {
		s.MeanRate = float64(count) / el
	}
	return s
}
