// Package registry holds a process's metrics: the five metric types
// (Counter, Gauge, Meter, Timer, Histogram), each safe for concurrent use
// and lock-free on its record path, and the Registry that names them.
//
// Every path that records ends here: application code directly, the shm
// host for worker processes, the wasm host module for plugins. Reporters
// read a Registry (Each, Stats, and each type's Snapshot or Native) and
// never write to it.
//
//	r := registry.New()
//	r.Counter("jobs.done").Inc()
//	defer r.Timer("http.latency").Time().Stop()
//
// Names are dotted paths under wire.ValidateName's rule; a name is one
// metric of one kind for the registry's life, and cannot also be a path to
// others ("a.b" beside "a.b.c"). docs/core.md has the design and the
// measurements behind it.
package registry
