package bench

import (
	"runtime"
	"syscall"
	"time"
)

// threadCPU returns the CPU time of the calling OS thread. The wasm
// benchmarks report it beside wall time because this machine is shared: on
// a loaded machine wall time includes the time the thread waited for a CPU,
// CPU time does not. lockThread pins the benchmark goroutine, which is the
// one running the guest, to its thread.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func lockThread() func() {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}
