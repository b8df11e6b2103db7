//go:build !linux

package uring

import (
	"errors"
	"sync/atomic"
	"time"
)

// ErrUnsupported: this kernel cannot wait on a futex through io_uring.
var ErrUnsupported = errors.New("io_uring futex wait unsupported")

// ErrRing: a ring could not be set up or used after Start.
var ErrRing = errors.New("io_uring waiter failed")

// Refused is false off Linux.
func Refused(err error) bool { return false }

// FailForTest has no effect off Linux.
var FailForTest atomic.Bool

// Waiter is never made off Linux.
type Waiter struct{}

// Start fails off Linux.
func Start(word *uint32) (*Waiter, error) { return nil, ErrUnsupported }

func (w *Waiter) Arm(d time.Duration)  {}
func (w *Waiter) Tick(d time.Duration) {}
func (w *Waiter) Await() error         { return ErrUnsupported }
func (w *Waiter) TID() int             { return 0 }
func (w *Waiter) Rings() int           { return 0 }
func (w *Waiter) Stop()                {}
