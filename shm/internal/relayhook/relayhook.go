// Package relayhook connects the host (package shm/host) to package
// shm/relay without an import: shm/relay uses cgo, and neither a Go worker
// importing shm nor a program draining a file needs to stop being a pure
// Go program (statically linked, built without a C compiler). A
// program that imports shm/relay (tapes-host does) sets Start from its
// init; without it the host waits in futex(2) from its goroutine.
package relayhook

import "time"

// Relay is what the host needs of a *relay.Relay.
type Relay interface {
	Arm(d time.Duration)
	Tick(d time.Duration)
	Await() error
	Stop()
	TID() int
}

// Start starts a relay waiting on word; nil while shm/relay is not linked
// in (or was built without cgo).
var Start func(word *uint32) (Relay, error)
