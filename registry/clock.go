package registry

import (
	"sync/atomic"
	"time"
)

// Clock is the time source of a registry. Inject one with WithClock to test
// rates and windows without sleeping. Metrics call it on every record, so an
// injected clock trades speed for control; production registries use the
// default coarse clock.
type Clock interface {
	Now() time.Time
}

// Why a coarse clock: time.Now costs ~47 ns on the VMs tapes targets, five
// times the budget of Meter.Mark. Meters and windows only need to know which
// 5-second tick or which half-window an event falls in, so one goroutine per
// process refreshes a shared monotonic timestamp every coarseResolution and
// every metric reads it with one atomic load of a cache line that is written
// 100 times a second. The goroutine stops itself after coarseIdleStops
// seconds in which nothing read the clock (so an idle process has no timer
// waking it and tests see no leaked goroutine), and the next reader restarts
// it after storing a precise timestamp itself.
const (
	coarseResolution = 10 * time.Millisecond
	coarseIdleStops  = 10
)

var coarseBase = time.Now()

type coarseClock struct {
	now     atomic.Int64 // nanoseconds since coarseBase, never decreasing
	_       [56]byte     // readers hammer now; keep the flags off its line
	used    atomic.Bool  // set by readers, cleared by the refresher each second
	running atomic.Bool

	// Zero means the defaults above; tests shorten them to see the
	// refresher stop and restart.
	res       time.Duration
	idleStops int
}

var coarse coarseClock

func preciseNanos() int64 { return int64(time.Since(coarseBase)) }

// nanos returns a monotonic timestamp at most ~coarseResolution old while the
// refresher runs, and a precise one whenever it has to restart it.
func (c *coarseClock) nanos() int64 {
	if t, ok := c.fast(); ok {
		return t
	}
	return c.wake()
}

// fast is nanos while the refresher runs and readers are known; ok is false
// when nanos must wake it.
func (c *coarseClock) fast() (int64, bool) {
	if c.used.Load() {
		return c.now.Load(), true
	}
	return 0, false
}

func (c *coarseClock) wake() int64 {
	t := c.advance(preciseNanos())
	c.used.Store(true)
	if c.running.CompareAndSwap(false, true) {
		go c.refresh()
	}
	return t
}

// advance stores t unless a later time is already there, so readers never
// see the clock run backwards.
func (c *coarseClock) advance(t int64) int64 {
	for {
		old := c.now.Load()
		if t <= old {
			return old
		}
		if c.now.CompareAndSwap(old, t) {
			return t
		}
	}
}

func (c *coarseClock) refresh() {
	res, stops := coarseResolution, coarseIdleStops
	if c.res > 0 {
		res, stops = c.res, c.idleStops
	}
	tk := time.NewTicker(res)
	defer tk.Stop()
	perSecond := max(int(time.Second/res), 1)
	if c.res > 0 {
		perSecond = 10 // checks every 10 ticks under test
	}
	idle, n := 0, 0
	for range tk.C {
		c.advance(preciseNanos())
		if n++; n < perSecond {
			continue
		}
		n = 0
		if c.used.Swap(false) {
			idle = 0
			continue
		}
		if idle++; idle < stops {
			continue
		}
		c.running.Store(false)
		// A reader may have set used after our Swap and failed to start a
		// refresher because we were still running: take the job back.
		if !c.used.Load() || !c.running.CompareAndSwap(false, true) {
			return
		}
		idle = 0
	}
}

// nanosOf returns the current time of clk in nanoseconds: the coarse clock
// when clk is nil (the zero value of every metric), else clk.Now().
func nanosOf(clk Clock) int64 {
	if clk == nil {
		return coarse.nanos()
	}
	return clk.Now().UnixNano()
}

// nanosFast is nanosOf's common case, small enough for the compiler to
// inline into a record path (nanosOf is not): ok is false when the caller
// must call nanosOf.
func nanosFast(clk Clock) (now int64, ok bool) {
	if clk == nil {
		return coarse.fast()
	}
	return 0, false
}
