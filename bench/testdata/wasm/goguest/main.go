//go:build wasip1

// Command goguest is the Go guest of the wasm benchmarks: it records counter
// increments through guest/tapesguest (buffered) or with one host call each.
package main

import "github.com/tapes-go/tapes/guest/tapesguest"

func main() {}

var (
	events = tapesguest.Counter("bench.go.events")
	other  = tapesguest.Counter("bench.go.other")
	id, _  = tapesguest.Define(1, "bench.go.events") // the same metric, for direct calls
)

// record records n increments through the SDK's buffer; the host runner
// flushes the rest after the call.
//
//go:wasmexport record
func record(n int32) {
	for i := int32(0); i < n; i++ {
		events.Inc()
	}
}

// record_mixed records n increments alternating between two counters.
//
//go:wasmexport record_mixed
func recordMixed(n int32) {
	for i := int32(0); i < n; i += 2 {
		events.Inc()
		other.Inc()
	}
}

//go:wasmimport tapes counter_add
func counterAdd(id uint32, n int64) int32

// record_direct records n increments with one host call each.
//
//go:wasmexport record_direct
func recordDirect(n int32) {
	for i := int32(0); i < n; i++ {
		counterAdd(uint32(id), 1)
	}
}

// noop measures the cost of a call into the guest.
//
//go:wasmexport noop
func noop() {}
