package registry

import _ "unsafe" // for go:linkname

// Once a histogram has grown cells, lockSlow hashes the current P's id to
// pick one, so that each P keeps writing the same cell (its cache lines
// stay on that core) and different Ps start on different cells. procPin
// returns the id; the pin is released at once. runtime.procPin is on the
// runtime's list of linknamed symbols kept stable for external packages
// (sync.Pool-style libraries rely on it).

//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()
