// Package uring lets tapes-host's drain goroutine sleep on the file's
// hostWait futex word through the Go netpoller: a futex wait submitted to
// an io_uring (Linux 6.7) completes when a worker wakes the word, and the
// ring signals an eventfd the netpoller watches. A wake-up is
// then one thread woken from epoll, where a relay thread (package
// shm/relay) costs three (itself, the netpoller's, itself again when
// re-armed) and a goroutine blocked in futex(2) keeps the runtime's
// monitor thread polling. Coalescing windows tick on a timerfd the
// netpoller watches too. Await answers by the word and the clock, so the
// eventfd is never read and the timerfd once a window. It needs no cgo. See docs/RATIONALE.md,
// "Polling without burning a core".
package uring
