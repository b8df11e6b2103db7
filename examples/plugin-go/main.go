//go:build wasip1

// Command plugin-go is an example tapes plugin written in Go: a WebAssembly
// reactor that records every kind of metric through guest/tapesguest. See
// README.md for how to build it and run it in tapes-host.
package main

import (
	"github.com/tapes-go/tapes/guest/tapesguest"
)

// main is not called in a c-shared (reactor) build; the host calls the
// exports below after _initialize has run the package initialisers.
func main() {}

var (
	// Defined at initialisation; the host puts them under the plugin's
	// prefix, e.g. plugins.example.requests.
	requests    = tapesguest.Counter("requests")
	collections = tapesguest.Counter("collections")
	bytesIn     = tapesguest.Meter("bytes_in")
	latency     = tapesguest.Timer("latency")
	sizes       = tapesguest.Histogram("payload_size")
	queue       = tapesguest.Gauge("queue_depth", nil)

	pending int
	handled int
	seed    uint32 = 1
)

// The function gauge is read on every flush, i.e. after every call.
var _ = tapesguest.Gauge("handled", func() float64 { return float64(handled) })

// handle is what a host calls per request: size is the payload size.
//
//go:wasmexport handle
func handle(size int32) int32 {
	defer latency.Time().Stop()
	requests.Inc()
	bytesIn.Mark(int64(size))
	sizes.Update(float64(size))
	pending++
	handled++
	queue.Set(float64(pending))
	return 0
}

// tapes_collect is called by tapes-host on its reporting interval: the
// plugin handles ten synthetic requests (sizes from a fixed pseudo-random
// sequence) and drains its queue.
//
//go:wasmexport tapes_collect
func collect() {
	collections.Inc()
	for i := 0; i < 10; i++ {
		seed = seed*1103515245 + 12345
		handle(int32(seed>>16)%1000 + 1)
	}
	pending = 0
	queue.Set(0)
}
