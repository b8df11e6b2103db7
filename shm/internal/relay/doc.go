// Package relay lets a Go process sleep on a futex word in shared memory
// without a goroutine blocked in futex(2): a thread the Go runtime does not
// know makes the wait and answers through an eventfd read by the netpoller.
// It needs cgo on Linux; package shm falls back to a plain futex wait
// without it. It is a package of its own because a package using cgo may
// not hold Go assembly (shm's commit_*.s).
package relay
