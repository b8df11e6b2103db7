//go:build wasip1

package tapesguest

import (
	"unsafe"

	"github.com/tapes-go/tapes/wire"
)

// noHost never comes from a real host; see host_other.go.
const noHost = -1 << 31

//go:wasmimport tapes define
func tapesDefine(kind uint32, ptr unsafe.Pointer, n uint32) int32

//go:wasmimport tapes batch
func tapesBatch(ptr unsafe.Pointer, n uint32) int32

func hostDefine(kind uint32, name string) int32 {
	return tapesDefine(kind, unsafe.Pointer(unsafe.StringData(name)), uint32(len(name)))
}

func hostBatch(p *uint64, n uint32) int32 { return tapesBatch(unsafe.Pointer(p), n) }

// flushExport lets the host flush the buffer after each call it makes.
//
//go:wasmexport tapes_flush
func flushExport() int32 {
	if err := Flush(); err != nil {
		if s, ok := err.(wire.Status); ok {
			return int32(s)
		}
		return 1 // some records were rejected; Rejected says how many
	}
	return 0
}
