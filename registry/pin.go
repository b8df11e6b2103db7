package registry

import _ "unsafe" // for go:linkname

// Histograms and timers keep one shard per P (the runtime's processor slot)
// so that no cache line is written by two cores on every event. procPin
// disables preemption and returns the current P's id, which makes the
// goroutine the only writer of that P's shard until procUnpin; the shard can
// then be updated with plain atomic loads and stores instead of locked
// read-modify-write instructions. runtime.procPin is on the runtime's list of
// linknamed symbols kept stable for external packages (sync.Pool-style
// libraries rely on it).

//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()
