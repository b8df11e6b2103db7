// Package shm lets a service that runs as many processes record metrics in
// every process and see them in one registry, with no broker and no
// socket: the only channel is one file, mapped by every process.
//
// A host process creates the file and drains it into a *registry.Registry,
// which, like every setting, is fixed when the Host is created:
//
//	h, err := shm.CreateHost("", shm.Config{Registry: registry.Default}) // DefaultPath, default geometry
//	go h.Drain(ctx)
//	// start workers with TAPES_SHM=h.Path() in their environment
//
// Each worker process claims a slot of the file and records into its own
// ring through a Client, which implements tapes.Recorder:
//
//	c, err := shm.OpenEnv()
//	defer c.Close()
//	c.Counter("jobs.done").Inc()
//	defer c.Timer("jobs.latency").Time().Stop()
//
// Recording costs about 6 ns, never blocks and never allocates; a full
// ring drops the event and counts it. The host reads each worker's events
// in order and applies them per metric, up to 4 Ki records at a time (a
// counter's sum once, a timer's values 64 at a time; gauges in order),
// reclaims the slots of workers that exit or die (judged by pid and
// process start time), combines cross-process gauges by the mode
// chosen when they are defined (GaugeSum, GaugeMin, GaugeMax, GaugeLast,
// GaugePerWorker), and reports its own metrics under Config.Prefix
// ("tapes.shm" by default): drained, dropped.all, dropped.pid-<pid>,
// malformed, rejected, discarded, aborted, reclaimed, refused,
// liveness_unknown, repaired, damaged, workers and lag. Nothing a worker
// writes into the file can make the host panic; a file truncated, shrunk,
// removed or replaced under the host is a *DamageError from Drain within a
// liveness interval (a second while no worker is attached), and the process
// should exit and be restarted.
// CreateMemfd makes a file nobody can truncate, for supervisors that hand
// it to their workers.
//
// Inspect reads a file without draining it, for diagnostics.
//
// The file format is specified byte for byte in docs/shm-layout.md, and the
// design choices are explained in docs/RATIONALE.md ("Shared memory").
// Linux is required for liveness (/proc, pidfd) and the host's futex
// wake-up; workers ring a doorbell bit in the header so that the host's
// passes visit only the slots with news.
package shm
