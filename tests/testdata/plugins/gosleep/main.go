//go:build wasip1

// Command gosleep is a Go plugin whose tapes_collect sleeps for an hour
// (wazero's sleep is a plain time.Sleep in the process running the guest),
// after recording "before" through the SDK.
package main

import (
	"time"

	"github.com/tapes-go/tapes/guest/tapesguest"
)

func main() {}

var before = tapesguest.Counter("before")

//go:wasmexport tapes_collect
func collect() {
	before.Inc()
	tapesguest.Flush()
	time.Sleep(time.Hour)
}
