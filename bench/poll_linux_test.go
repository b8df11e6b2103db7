package bench

import (
	"syscall"
	"time"
	"unsafe"
)

// pollPause sleeps ~20 µs in nanosleep(2) without telling the Go runtime.
// time.Sleep that short ends at the netpoller's next wake-up, often a
// millisecond later when nothing else runs, so a poller using it measured
// itself (p50 ~1 ms) rather than the host. The goroutine keeps its P while
// it sleeps: the host's goroutine runs on another.
func pollPause() {
	ts := syscall.Timespec{Nsec: 20_000}
	syscall.RawSyscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// quietPause sleeps d in nanosleep(2), a system call the runtime is told
// about: the thread sleeps on its own clock, and the P goes to the host.
func quietPause(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}
