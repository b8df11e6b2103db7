// Package uring lets tapes-host's drain goroutine sleep on the file's
// hostWait futex word through the Go netpoller: a futex wait submitted to
// an io_uring (Linux 6.7) completes when a worker wakes the word, and the
// ring's descriptor, read by the netpoller, becomes readable. A wake-up is
// then one thread woken from epoll, where a relay thread (package
// shm/relay) costs three (itself, the netpoller's, itself again when
// re-armed) and a goroutine blocked in futex(2) keeps the runtime's
// monitor thread polling. Coalescing windows tick on a timerfd the
// netpoller reads too. It needs no cgo. See docs/RATIONALE.md,
// "Polling without burning a core".
package uring
