// Package tapesguest records tapes metrics from a Go program compiled to
// WebAssembly (GOOS=wasip1 GOARCH=wasm) and run by a host that provides the
// "tapes" module, such as package hostabi/plugin's runner or tapes-host.
//
// The package depends on package wire alone (the record format, the kinds
// and the ABI status codes), not on the registry: a guest carries only what
// it records with. Handles have the methods of the root package's handle
// interfaces (wire's, which the root package names by aliases), so code
// that records through them reads the same in a guest as in the host:
//
//	var (
//		hits    = tapesguest.Counter("http.hits")
//		latency = tapesguest.Timer("http.latency")
//	)
//
//	//go:wasmexport handle
//	func handle() {
//		defer latency.Time().Stop()
//		hits.Inc()
//	}
//
// Recording appends a 16-byte wire.Record to a buffer in guest memory (a few
// nanoseconds); the buffer reaches the host in one call when it fills, when
// Flush is called, and after every call the host makes into the guest: the
// package exports "tapes_flush", which the hostabi/plugin runner calls after each
// call (other hosts should do the same, or the guest calls Flush itself).
// A command (a program with main, run through _start) must call Flush
// before main returns.
//
// Handle constructors define the metric in the host, which puts it under
// the plugin's prefix; like the root package's functions they panic when
// the host refuses the name (invalid, kind conflict, the plugin's metric
// cap). Define returns the refusal, a wire.Status, as an error instead. Each constructor is
// a call into the host, so keep handles in variables, made once.
//
// The package is not safe for concurrent use by goroutines that block
// between records; WebAssembly runs one goroutine at a time and the SDK
// never yields while it writes a record, so ordinary use is safe.
//
// Outside wasip1 the package compiles (so code sharing it builds on any
// platform) but there is no host: Define returns ErrNoHost and the handle
// constructors panic.
package tapesguest

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/tapes-go/tapes/wire"
)

// ErrNoHost is returned outside WebAssembly, where no host provides tapes.
var ErrNoHost = errors.New("tapesguest: not running in a tapes WebAssembly host")

// BufferRecords is how many events the buffer holds before it is flushed.
const BufferRecords = 1024

// The buffer holds wire records as their two 64-bit words (wire.Word0 and
// the value; WebAssembly is little-endian, as the words are). Writing two
// words instead of calling wire.Record.Put (not inlinable) halves the cost
// of an event in a Go guest, where every call is expensive.
var (
	buf      [BufferRecords][wire.RecordSize / 8]uint64
	buffered uint // records in buf
	rejected uint64
	gauges   []gaugeFunc
	flushing bool
)

type gaugeFunc struct {
	w  uint64 // the gauge's records' first word
	fn func() float64
}

// ID is a metric id handed out by the host; ids start at 0.
type ID uint32

// Define defines the metric called name (under the plugin's prefix) with
// kind k in the host, or finds it, and returns its id.
func Define(k wire.Kind, name string) (ID, error) {
	r := hostDefine(uint32(k), name)
	if r < 0 {
		if r == noHost {
			return 0, ErrNoHost
		}
		return 0, wire.Status(r)
	}
	return ID(r), nil
}

// mustDefine defines a handle's metric and returns its records' first word.
func mustDefine(k wire.Kind, name string) uint64 {
	id, err := Define(k, name)
	if err != nil {
		panic(fmt.Sprintf("tapesguest: %s %q: %v", k, name, err))
	}
	return wire.Word0(uint32(id), k)
}

// A buffer entry is a whole record only while a record is two words.
var _ = [1]struct{}{}[wire.RecordSize-16]

// push appends a record; w0 comes from wire.Word0, computed once per handle.
// It sends the buffer as soon as it is full, rather than before the next
// append, so that the append does not follow a call's resume point (one
// jump through Go's dispatch loop per event instead of two). buffered is
// BufferRecords only until flushBuffer resets it, before it calls the host;
// nothing runs in between, as a wasm guest has no preemption.
func push(w0, v uint64) {
	buf[buffered] = [2]uint64{w0, v}
	buffered++
	if buffered >= BufferRecords {
		flushFull()
	}
}

// flushFull makes room when the buffer is full; kept out of push so that
// push inlines into the handles' methods (a Go guest pays for every call:
// Go's wasm code keeps its own stack, and with interrupts enabled each
// call's entry into a function also spends a fuel check).
//
//go:noinline
func flushFull() { flushBuffer() }

// Record appends one event for a metric defined with Define; value holds an
// int64 (counter, meter, timer in ns) or float64 bits (histogram, gauge),
// as in wire.Record.
func Record(id ID, k wire.Kind, value uint64) { push(wire.Word0(uint32(id), k), value) }

func flushBuffer() error {
	n := buffered
	if n == 0 {
		return nil
	}
	buffered = 0
	r := hostBatch(&buf[0][0], uint32(n))
	switch {
	case r > 0:
		rejected += uint64(r)
		return fmt.Errorf("tapesguest: the host rejected %d of %d records", r, n)
	case r == noHost:
		return ErrNoHost
	case r < 0:
		return wire.Status(r)
	}
	return nil
}

// Flush reads the gauges created with a function, then sends every buffered
// event to the host in one call. It returns an error when the host rejected
// records (see Rejected) or the batch as a whole.
func Flush() error {
	if flushing { // a gauge function that records must not recurse
		return nil
	}
	flushing = true
	for _, g := range gauges {
		push(g.w, math.Float64bits(g.fn()))
	}
	flushing = false
	return flushBuffer()
}

// Buffered returns the number of events waiting in the buffer.
func Buffered() int { return int(buffered) }

// Rejected returns how many buffered events the host has refused so far:
// records whose id is unknown or has another kind, records of a zero
// handle, negative timer durations (docs/guest-abi.md lists the statuses).
func Rejected() uint64 { return rejected }

// Handles are values holding the records' first word (TimerHandle also a
// pointer to its stopwatch's state, used by Time only), not pointers: a
// handle kept in a variable then costs one load per event, where a pointer
// would cost a nil check and a second, dependent load (measured in
// docs/guest-abi.md). The zero value of
// a handle names no metric: the host rejects its records (see Rejected).

// CounterHandle is a counter in the host.
type CounterHandle struct{ w uint64 }

// Counter defines the counter called name and returns its handle.
func Counter(name string) CounterHandle {
	return CounterHandle{mustDefine(wire.KindCounter, name)}
}

func (c CounterHandle) Inc()        { push(c.w, 1) }
func (c CounterHandle) Dec()        { push(c.w, math.MaxUint64) } // -1
func (c CounterHandle) Add(n int64) { push(c.w, uint64(n)) }

// GaugeHandle is a gauge in the host.
type GaugeHandle struct{ w uint64 }

// Gauge defines the gauge called name. If fn is not nil, it is called on
// every Flush (and so after every call the host makes) and its value sent
// as the gauge's new value.
func Gauge(name string, fn func() float64) GaugeHandle {
	w := mustDefine(wire.KindGauge, name)
	if fn != nil {
		gauges = append(gauges, gaugeFunc{w, fn})
	}
	return GaugeHandle{w}
}

func (g GaugeHandle) Set(v float64) { push(g.w, math.Float64bits(v)) }

// MeterHandle is a meter in the host.
type MeterHandle struct{ w uint64 }

// Meter defines the meter called name.
func Meter(name string) MeterHandle {
	return MeterHandle{mustDefine(wire.KindMeter, name)}
}

func (m MeterHandle) Mark(n int64) { push(m.w, uint64(n)) }

// HistogramHandle is a histogram in the host.
type HistogramHandle struct{ w uint64 }

// Histogram defines the histogram called name.
func Histogram(name string) HistogramHandle {
	return HistogramHandle{mustDefine(wire.KindHistogram, name)}
}

func (h HistogramHandle) Update(v float64) { push(h.w, math.Float64bits(v)) }

// TimerHandle is a timer in the host.
// Durations travel in nanoseconds; the host records them in seconds.
type TimerHandle struct {
	w uint64
	// sw is what Time's stopwatch reports to. It is made once per handle:
	// a stopwatch holds an interface, and boxing the handle itself would
	// allocate on every Time.
	sw *timerSink
}

type timerSink struct{ w uint64 }

func (s *timerSink) Update(d time.Duration) { push(s.w, uint64(d)) }

// zeroTimer is the zero TimerHandle's sink; its records are rejected like
// those of the other zero handles.
var zeroTimer timerSink

// Timer defines the timer called name.
func Timer(name string) TimerHandle {
	w := mustDefine(wire.KindTimer, name)
	return TimerHandle{w, &timerSink{w}}
}

func (t TimerHandle) Update(d time.Duration)      { push(t.w, uint64(d)) }
func (t TimerHandle) UpdateSince(start time.Time) { t.Update(time.Since(start)) }

// Time starts a stopwatch whose Stop records the time elapsed into t.
func (t TimerHandle) Time() Stopwatch {
	if t.sw == nil {
		return wire.StartStopwatch(&zeroTimer)
	}
	return wire.StartStopwatch(t.sw)
}

// Stopwatch is a started measurement of a TimerHandle; Stop records it. It
// is package wire's, the one the registry and the shm client return too: a
// value, so timing a block allocates nothing.
type Stopwatch = wire.Stopwatch

func (t TimerHandle) Func(f func()) {
	start := time.Now()
	defer t.UpdateSince(start)
	f()
}
