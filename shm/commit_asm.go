//go:build amd64 || arm64

package shm

import "unsafe"

// commit writes a record's value, then its first word (id and kind) with
// release ordering: the host treats the record as committed once it loads a
// non-zero kind from that word. See docs/shm-layout.md, "Commit protocol".
//
//go:noescape
func commit(p unsafe.Pointer, w0, v uint64)
