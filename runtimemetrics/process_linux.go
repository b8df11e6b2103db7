package runtimemetrics

import (
	"bytes"
	"math"
	"os"
	"strconv"
	"sync"
	"syscall"
)

type processGauge struct {
	name string
	fn   func() float64
}

// processGauges reads /proc/self, as client_golang's process collector
// does. A value that cannot be read is NaN (JSON null), never a made-up 0.
func processGauges() []processGauge {
	page := float64(os.Getpagesize())
	statm := func(field int) func() float64 {
		return func() float64 {
			b, err := os.ReadFile("/proc/self/statm")
			if err != nil {
				return math.NaN()
			}
			f := bytes.Fields(b)
			if len(f) <= field {
				return math.NaN()
			}
			n, err := strconv.ParseUint(string(f[field]), 10, 64)
			if err != nil {
				return math.NaN()
			}
			return float64(n) * page
		}
	}
	return []processGauge{
		{"cpu_seconds", cpuSeconds},
		{"open_fds", openFDs},
		{"max_fds", func() float64 {
			var l syscall.Rlimit
			if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
				return math.NaN()
			}
			return float64(l.Cur)
		}},
		{"resident_bytes", statm(1)},
		{"virtual_bytes", statm(0)},
		{"start_time_seconds", startTime},
	}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// openFDs counts /proc/self/fd, less the descriptor used to read it.
func openFDs() float64 {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return math.NaN()
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return math.NaN()
	}
	return float64(len(names) - 1)
}

// startTime is the process start time as Unix seconds: field 22 of
// /proc/self/stat (clock ticks since boot; USER_HZ is 100 on every Linux
// architecture Go supports) plus the boot time from /proc/stat, which is
// in whole seconds: the result can be up to 1 s off. It cannot change, so
// it is read once.
var startTime = sync.OnceValue(func() float64 {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return math.NaN()
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return math.NaN()
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 20 {
		return math.NaN()
	}
	ticks, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return math.NaN()
	}
	ps, err := os.ReadFile("/proc/stat")
	if err != nil {
		return math.NaN()
	}
	for _, line := range bytes.Split(ps, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			boot, err := strconv.ParseUint(string(bytes.TrimSpace(rest)), 10, 64)
			if err != nil {
				return math.NaN()
			}
			return float64(boot) + float64(ticks)/100
		}
	}
	return math.NaN()
})
