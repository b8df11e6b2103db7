package host

import (
	"os"
	"syscall"
	"time"
	"unsafe"

	mmap "github.com/edsrzf/mmap-go"

	"github.com/tapes-go/tapes/shm/internal/layout"
	"github.com/tapes-go/tapes/shm/internal/sys"
)

// Errors the host returns, matched with errors.Is. They are the values
// package shm returns (ErrClosed is shm.ErrClosed, and so on), so either
// name matches.
var (
	ErrNotShm     = layout.ErrNotShm
	ErrVersion    = layout.ErrVersion
	ErrCorrupt    = layout.ErrCorrupt
	ErrTruncated  = layout.ErrTruncated
	ErrReplaced   = layout.ErrReplaced
	ErrLocked     = layout.ErrLocked
	ErrClosed     = layout.ErrClosed
	ErrNotOwner   = layout.ErrNotOwner
	ErrBadPerm    = layout.ErrBadPerm
	ErrNotRegular = layout.ErrNotRegular
)

// Short names for the file format (package shm/internal/layout, shared
// with the worker client) and the system calls both sides make (package
// shm/internal/sys), so that the host's code reads as it did when both
// lived in package shm.
const (
	hdrWait       = layout.HdrWait
	hdrWaitZero   = layout.HdrWaitZero
	hdrClaimWaits = layout.HdrClaimWaits
	hdrRefused    = layout.HdrRefused
	hdrBell       = layout.HdrBell
	trailerCanary = layout.TrailerCanary

	slotState    = layout.SlotState
	slotStart    = layout.SlotStart
	slotReserve  = layout.SlotReserve
	slotDropped  = layout.SlotDropped
	slotDefCount = layout.SlotDefCount
	slotConsumer = layout.SlotConsumer
	slotTaking   = layout.SlotTaking
	slotDefs     = layout.SlotDefs

	defKind     = layout.DefKind
	defMode     = layout.DefMode
	defNameLen  = layout.DefNameLen
	defZero     = layout.DefZero
	defGaugeSet = layout.DefGaugeSet
	defGaugeVal = layout.DefGaugeVal
	defName     = layout.DefName

	pidLimit  = sys.PidLimit
	haveFutex = sys.HaveFutex
)

type (
	geometry = layout.Geometry
	fileInfo = sys.FileInfo
)

func packState(pid, gen uint32, state uint8) uint64 { return layout.PackState(pid, gen, state) }

func unpackState(w uint64) (pid, gen uint32, state uint8) { return layout.UnpackState(w) }

func u64(m []byte, off int) *uint64 { return layout.U64(m, off) }
func u32(m []byte, off int) *uint32 { return layout.U32(m, off) }

func unsafeAdd[T any](p *T, off uintptr) unsafe.Pointer { return unsafe.Add(unsafe.Pointer(p), off) }

func openFile(path string, flag int) (*os.File, fileInfo, error) { return sys.OpenFile(path, flag) }
func checkFile(f *os.File) (fileInfo, error)                     { return sys.CheckFile(f) }
func statInfo(st *syscall.Stat_t) fileInfo                       { return sys.StatInfo(st) }
func mapFile(f *os.File, size int, write bool) (mmap.MMap, error) {
	return sys.MapFile(f, size, write)
}
func flock(f *os.File) error                               { return sys.Flock(f) }
func procStart(pid int) (uint64, bool, error)              { return sys.ProcStart(pid) }
func pidGone(pid uint32) bool                              { return sys.PidGone(pid) }
func isFDPath(p string) bool                               { return sys.IsFDPath(p) }
func futexSleep(addr *uint32, val uint32, d time.Duration) { sys.FutexSleep(addr, val, d) }
func futexWakeAll(addr *uint32)                            { sys.FutexWakeAll(addr) }
func populate(m []byte, from, to int)                      { sys.Populate(m, from, to) }
func zeroRange(m []byte, from, to int)                     { sys.ZeroRange(m, from, to) }
