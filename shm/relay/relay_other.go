//go:build !(linux && cgo)

package relay

import (
	"errors"
	"time"
)

// Available: without cgo the host waits in futex(2) from its goroutine,
// which costs more CPU per wake-up (see relay_cgo.go).
const Available = false

// Relay is not available in this build.
type Relay struct{}

// Start fails in this build.
func Start(*uint32) (*Relay, error) { return nil, errors.New("wake-up relay: needs cgo on Linux") }

// Arm does nothing in this build.
func (*Relay) Arm(time.Duration) {}

// Tick does nothing in this build.
func (*Relay) Tick(time.Duration) {}

// Await does nothing in this build.
func (*Relay) Await() error { return errors.New("wake-up relay: needs cgo on Linux") }

// TID is 0 in this build.
func (*Relay) TID() int { return 0 }

// Stop does nothing in this build.
func (*Relay) Stop() {}
