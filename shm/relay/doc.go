// Package relay lets a Go process sleep on a futex word in shared memory
// without a goroutine blocked in futex(2): a thread the Go runtime does not
// know makes the wait and answers through an eventfd read by the netpoller.
// It needs cgo on Linux.
//
// Importing it (for its side effect, as tapes-host does) makes host.Host
// (package shm/host) use it where the kernel cannot wait on a futex
// through io_uring (before Linux 6.7, or io_uring refused), the host's
// first choice: neither shm/host nor shm imports it, so that
// Go workers, which import shm for its Client, stay pure Go programs, and
// so do programs and tests that drain a file without it. Without it, or
// without cgo, the
// host waits in futex(2) from its goroutine, which costs more CPU per
// wake-up (docs/RATIONALE.md, "Polling without burning a core"). (It
// could not live in package shm anyway: a package using cgo may not hold
// Go assembly, shm's commit_*.s.)
package relay
