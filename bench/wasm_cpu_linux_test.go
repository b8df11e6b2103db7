package bench

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU returns the CPU time of the calling OS thread. The wasm
// benchmarks report it beside wall time because this machine is shared: on
// a loaded machine wall time includes the time the thread waited for a CPU,
// CPU time does not. lockThread pins the benchmark goroutine, which is the
// one running the guest, to its thread.
//
// It reads CLOCK_THREAD_CPUTIME_ID, which is exact, rather than
// getrusage(RUSAGE_THREAD), which here advances in 4 ms ticks: too coarse
// for BenchmarkWasmEventsPaired, which times single calls of ~70 µs.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

func lockThread() func() {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}
