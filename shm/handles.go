// The handles a worker records through (Counter, Meter, Timer, Histogram,
// Gauge), each a record put into the worker's ring.

package shm

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/tapes-go/tapes/wire"
)

func handle[T any](c *Client, k wire.Kind, name string, mk func(id uint32) *T) (*T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.handles[name].(*T); ok {
		return h, nil
	}
	id, err := c.defineLocked(k, name, 0)
	if err != nil {
		return nil, err
	}
	h := mk(id)
	c.handles[name] = h
	return h, nil
}

func must[T any](h *T, err error) *T {
	if err != nil {
		panic(err)
	}
	return h
}

// GetCounter is the error-returning form of Counter.
func (c *Client) GetCounter(name string) (*Counter, error) {
	return handle(c, wire.KindCounter, name, func(id uint32) *Counter {
		return &Counter{c: c, w0: wire.Word0(id, wire.KindCounter)}
	})
}

// GetMeter is the error-returning form of Meter.
func (c *Client) GetMeter(name string) (*Meter, error) {
	return handle(c, wire.KindMeter, name, func(id uint32) *Meter {
		return &Meter{c: c, w0: wire.Word0(id, wire.KindMeter)}
	})
}

// GetTimer is the error-returning form of Timer.
func (c *Client) GetTimer(name string) (*Timer, error) {
	return handle(c, wire.KindTimer, name, func(id uint32) *Timer {
		return &Timer{c: c, w0: wire.Word0(id, wire.KindTimer)}
	})
}

// GetHistogram is the error-returning form of Histogram.
func (c *Client) GetHistogram(name string) (*Histogram, error) {
	return handle(c, wire.KindHistogram, name, func(id uint32) *Histogram {
		return &Histogram{c: c, w0: wire.Word0(id, wire.KindHistogram)}
	})
}

// GetGauge is the error-returning form of Gauge with an explicit mode (0
// means the mode declared with GaugeMode, else DefaultGaugeMode). A non-nil
// fn is sampled by the client's background loop, on Flush and on Close; the
// first fn given for a name stays.
func (c *Client) GetGauge(name string, mode GaugeMode, fn func() float64) (*Gauge, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.handles[name].(*Gauge); ok {
		if mode != 0 && mode != c.defs[name].mode {
			return nil, fmt.Errorf("%w: %q is %v, asked for %v", ErrModeConflict, name, c.defs[name].mode, mode)
		}
		return h, nil
	}
	id, err := c.defineLocked(wire.KindGauge, name, mode)
	if err != nil {
		return nil, err
	}
	e := c.base + c.g.DefOffset + int(id)*DefSize
	h := &Gauge{c: c, w0: wire.Word0(id, wire.KindGauge), set: u32(c.m, e+defGaugeSet), val: u64(c.m, e+defGaugeVal), fn: fn}
	c.handles[name] = h
	if fn != nil {
		c.funcs = append(c.funcs, h)
		if c.stop == nil {
			c.stop, c.done = make(chan struct{}), make(chan struct{})
			go c.sampler(c.stop, c.done)
		}
		h.record(fn())
	}
	return h, nil
}

// Counter returns a handle to the counter called name, defining it if
// needed. It panics on an invalid name or a kind conflict, as the
// registry's accessors do; use GetCounter for names from elsewhere.
func (c *Client) Counter(name string) wire.CounterHandle { return must(c.GetCounter(name)) }

// Meter returns a handle to the meter called name; it panics like Counter.
func (c *Client) Meter(name string) wire.MeterHandle { return must(c.GetMeter(name)) }

// Timer returns a handle to the timer called name; it panics like Counter.
func (c *Client) Timer(name string) wire.TimerHandle { return must(c.GetTimer(name)) }

// Histogram returns a handle to the histogram called name; it panics like Counter.
func (c *Client) Histogram(name string) wire.HistogramHandle {
	return must(c.GetHistogram(name))
}

// Gauge returns a handle to the gauge called name with the mode declared by
// GaugeMode, else DefaultGaugeMode (sum). A non-nil fn makes it a function
// gauge, sampled in the background (see WithSampleInterval). It panics like
// Counter.
func (c *Client) Gauge(name string, fn func() float64) wire.GaugeHandle {
	return must(c.GetGauge(name, 0, fn))
}

// Counter is a worker's handle to a counter. Methods cost one ring record.
type Counter struct {
	c  *Client
	w0 uint64
}

// Inc adds 1.
func (h *Counter) Inc() { h.c.put(h.w0, 1) }

// Dec subtracts 1.
func (h *Counter) Dec() { h.c.put(h.w0, math.MaxUint64) }

// Add adds n, which may be negative.
func (h *Counter) Add(n int64) { h.c.put(h.w0, uint64(n)) }

// Meter is a worker's handle to a meter.
type Meter struct {
	c  *Client
	w0 uint64
}

// Mark records n events.
func (h *Meter) Mark(n int64) { h.c.put(h.w0, uint64(n)) }

// Histogram is a worker's handle to a histogram.
type Histogram struct {
	c  *Client
	w0 uint64
}

// Update records v.
func (h *Histogram) Update(v float64) { h.c.put(h.w0, math.Float64bits(v)) }

// Timer is a worker's handle to a timer.
type Timer struct {
	c  *Client
	w0 uint64
}

// Update records one duration. A negative one is dropped here, since the
// host's registry.Timer would ignore it anyway, and spends no ring slot.
func (h *Timer) Update(d time.Duration) {
	if d >= 0 {
		h.c.put(h.w0, uint64(d))
	}
}

// UpdateSince records the time elapsed since start.
func (h *Timer) UpdateSince(start time.Time) { h.Update(time.Since(start)) }

// Time starts a stopwatch whose Stop records the elapsed time.
func (h *Timer) Time() wire.Stopwatch { return wire.StartStopwatch(h) }

// Func runs f and records how long it took.
func (h *Timer) Func(f func()) {
	start := time.Now()
	defer h.UpdateSince(start)
	f()
}

// Gauge is a worker's handle to a cross-process gauge.
type Gauge struct {
	c   *Client
	w0  uint64
	set *uint32
	val *uint64
	fn  func() float64
}

// Set records v as this worker's value. On a function gauge it has no
// effect: the function wins, as in the registry.
func (h *Gauge) Set(v float64) {
	if h.fn == nil {
		h.record(v)
	}
}

// record keeps the value in the definition entry too, so that a host that
// starts later learns the current value even if the record is long drained.
func (h *Gauge) record(v float64) {
	if h.c.closed.Load() {
		return
	}
	b := math.Float64bits(v)
	atomic.StoreUint64(h.val, b)
	if atomic.LoadUint32(h.set) == 0 {
		atomic.StoreUint32(h.set, 1)
	}
	h.c.put(h.w0, b)
}

var _ wire.Recorder = (*Client)(nil)
