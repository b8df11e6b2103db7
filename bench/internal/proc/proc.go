// Package proc reads the CPU time a benchmark process has used. The
// machines these benchmarks run on are shared: wall time counts other
// processes' time too, CPU time does not.
package proc

import (
	"syscall"
	"time"
)

// CPU returns the user plus system CPU time of this process so far.
func CPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
