// Package host is the host side of tapes' shared memory (package shm is
// the workers'): it creates or attaches to the file, drains every worker's
// ring into one *registry.Registry, reclaims the slots of workers that
// exit or die, and reports its own metrics. The registry, like every
// setting, is fixed when the Host is created:
//
//	h, err := host.Create("", host.Config{Registry: registry.Default}) // shm.DefaultPath, default geometry
//	go h.Drain(ctx)
//	// start workers with TAPES_SHM=h.Path() in their environment (shm.EnvVar)
//
// The host applies each worker's events per metric, up to 4 Ki records at
// a time (a counter's sum once, a timer's values 64 at a time; gauges in
// order), reclaims the slots of workers that exit or die (judged by pid
// and process start time), combines cross-process gauges by the mode
// chosen when they are defined (shm.GaugeSum, ...), and reports its own
// metrics under Config.Prefix ("tapes.shm" by default): drained,
// dropped.all, dropped.pid-<pid>, malformed, rejected, discarded, aborted,
// reclaimed, refused, liveness_unknown, repaired, damaged, workers and lag.
// Nothing a worker writes into the file can make the host panic; a file
// truncated, shrunk, removed or replaced under the host is a *DamageError
// from Drain within a liveness interval (a second while no worker is
// attached), and the process should exit and be restarted.
// CreateMemfd makes a file nobody can truncate, for supervisors that hand
// it to their workers.
//
// Linux is required for liveness (/proc, pidfd) and the futex wake-up. The
// host waits for workers through io_uring where the kernel has its futex
// wait (Linux 6.7), else, in a program that imports package shm/relay
// (built with cgo), in a thread of its own (see Drain).
package host
