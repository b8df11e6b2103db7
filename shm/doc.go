// Package shm is the worker side of tapes' shared memory: a service that
// runs as many processes records metrics in every process into one file,
// mapped by every process, and one host process (package shm/host) drains
// it into a registry, with no broker and no socket. This package is what
// a worker, or an outside reader of the file, imports; it depends on
// package wire alone (not on the registry), and stays a pure Go package
// without cgo.
//
// Each worker process claims a slot of the file and records into its own
// ring through a Client, which implements tapes.Recorder (wire.Recorder):
//
//	c, err := shm.OpenEnv() // path from $TAPES_SHM, which the host set
//	defer c.Close()
//	c.Counter("jobs.done").Inc()
//	defer c.Timer("jobs.latency").Time().Stop()
//
// Recording costs about 6 ns, never blocks and never allocates; a full
// ring drops the event and counts it. The host reads each worker's events
// in order, reclaims the slots of workers that exit or die, and combines
// cross-process gauges by the mode chosen when they are defined (GaugeSum,
// GaugeMin, GaugeMax, GaugeLast, GaugePerWorker).
//
// Inspect reads a file without draining it, for diagnostics.
//
// The file format is specified byte for byte in docs/shm-layout.md, and the
// design choices are explained in docs/RATIONALE.md ("Shared memory").
// Linux is required (a worker's liveness is judged by its pid and process
// start time); workers ring a doorbell bit in the header so that the
// host's passes visit only the slots with news, and wake a sleeping host
// through a futex.
package shm
