//go:build wasip1

// Command goguest records every kind of metric through guest/tapesguest;
// hostabi/plugin's tests check that the host registry holds exactly these values.
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o goguest.wasm .
package main

import (
	"time"

	"github.com/tapes-go/tapes/guest/tapesguest"
)

func main() {}

// counter is the root package's tapes.CounterHandle, which the SDK does not
// import; hostabi/internal/interrupt's TestRewriteGoGuestChecksPerEvent
// counts the fuel checks of a call through it.
type counter interface {
	Inc()
	Dec()
	Add(int64)
}

var (
	requests    counter // an interface, as portable code would hold it: Inc is a dynamic call
	temperature tapesguest.GaugeHandle
	bytes       tapesguest.MeterHandle
	latency     tapesguest.TimerHandle
	size        tapesguest.HistogramHandle
	calls       int
	ready       bool
)

func setup() {
	if ready {
		return
	}
	requests = tapesguest.Counter("go.requests")
	temperature = tapesguest.Gauge("go.temperature", nil)
	bytes = tapesguest.Meter("go.bytes")
	latency = tapesguest.Timer("go.latency")
	size = tapesguest.Histogram("go.size")
	tapesguest.Gauge("go.calls", func() float64 { return float64(calls) })
	ready = true
}

// record_all records, per call, the same values as the C guest: counter +7,
// gauge 42.5, meter 6, timer 1 ms and 2 ms, histogram 1.5 and 2.5; and the
// function gauge go.calls reads the number of calls at each flush.
//
//go:wasmexport record_all
func recordAll() int32 {
	setup()
	calls++
	requests.Add(3)
	requests.Inc()
	requests.Add(4)
	requests.Dec()
	temperature.Set(41)
	bytes.Mark(5)
	bytes.Mark(1)
	latency.Update(time.Millisecond)
	latency.Update(2 * time.Millisecond)
	size.Update(1.5)
	size.Update(2.5)
	temperature.Set(42.5)
	return 0
}

// timed records one duration measured with the real clock.
//
//go:wasmexport timed
func timed() {
	setup()
	latency.Func(func() { time.Sleep(time.Millisecond) })
}

// events records n counter increments (the benchmark path).
//
//go:wasmexport events
func events(n int32) {
	setup()
	for i := int32(0); i < n; i++ {
		requests.Inc()
	}
}

// zero_handles records once through the zero value of every handle type,
// which names no metric, flushes, and returns how many records the host
// has rejected so far.
//
//go:wasmexport zero_handles
func zeroHandles() int32 {
	tapesguest.CounterHandle{}.Inc()
	tapesguest.GaugeHandle{}.Set(1)
	tapesguest.MeterHandle{}.Mark(1)
	tapesguest.HistogramHandle{}.Update(1)
	var t tapesguest.TimerHandle
	t.Update(time.Millisecond)
	t.Time().Stop()
	tapesguest.Flush()
	return int32(tapesguest.Rejected())
}

//go:wasmexport buffered
func buffered() int32 { return int32(tapesguest.Buffered()) }

// define_bad tries names the host must refuse and returns how many it did.
//
//go:wasmexport define_bad
func defineBad() int32 {
	n := int32(0)
	for _, name := range []string{"", "a..b", "sp ace", "go.requests"} {
		if _, err := tapesguest.Define(2, name); err != nil {
			n++
		}
	}
	return n
}

//go:wasmexport panics
func panics() { panic("guest panic") }

var sink []byte

// alloc allocates mb MiB and keeps them, to hit the memory limit.
//
//go:wasmexport alloc
func alloc(mb int32) int32 {
	sink = make([]byte, int(mb)<<20)
	for i := range sink {
		sink[i] = 1
	}
	return int32(len(sink) >> 20)
}

var spins uint64

// spin never returns: only the runner's deadline ends it.
//
//go:wasmexport spin
func spin() {
	for {
		spins++
	}
}
