// Package layout is the shm file's format, shared by the worker client
// (package shm) and the host (package shm/host): the offsets and limits,
// the Geometry a header describes and its validation, and the errors of
// file validation. docs/shm-layout.md specifies every byte; these
// constants are the only place the numbers live in Go.
package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/tapes-go/tapes/wire"
)

// The file layout. All integers are little-endian.
//
//	File
//	 0                                                          HeaderSize
//	+------------------------------------------------------------+
//	| header (Geometry written once by the creating host; the    |
//	| second line holds hostWait, claimWaits and refused; then   |
//	| the doorbell: one bit per slot, MaxSlots bits)             |
//	+------------------------------------------------------------+
//	| slot 0  (SlotSize bytes)                                   |
//	+------------------------------------------------------------+
//	| ...                                                        |
//	+------------------------------------------------------------+
//	| slot Slots-1                                               |
//	+------------------------------------------------------------+
//	| trailer (64 bytes): zero, then the host's canary (last 8)  |
//	+------------------------------------------------------------+
//
//	Header
//	 0       8        12         16      20       24      28       32
//	+-------+--------+----------+-------+--------+-------+--------+
//	| magic |version |headerSize| slots |ringRecs|maxDefs|defSize |
//	+-------+--------+----------+-------+--------+-------+--------+
//	32          40          48         52          56     64       68  72         80      88         128
//	+-----------+-----------+----------+-----------+------+--------+---+----------+-------+----------+
//	| slotSize  | fileSize  |defOffset |ringOffset |  0   |hostWait| 0 |claimWaits|refused|host-owned|
//	+-----------+-----------+----------+-----------+------+--------+---+----------+-------+----------+
//	128                                                                                             640
//	+-----------------------------------------------------------------------------------------------+
//	| doorbell: 64 u64 words; bit i%64 of word i/64 is slot i's (workers: atomic OR; host: swap 0)  |
//	+-----------------------------------------------------------------------------------------------+
//
//	Slot (each line is one 64-byte cache line, written by one side)
//	  0 +--------------------------------------------------------+
//	    | state u64 (pid<<32 | generation<<8 | state)  CAS: both  |
//	    | startTime u64                              worker once |
//	 64 +--------------------------------------------------------+
//	    | reserve u64 | dropped u64 | defCount u64    worker only |
//	128 +--------------------------------------------------------+
//	    | spacer (adjacent-line prefetch)                         |
//	192 +--------------------------------------------------------+
//	    | consumer u64 | taking u64                    host only  |
//	256 +--------------------------------------------------------+
//	    | definition table: maxDefs entries of DefSize bytes      |
//	    |  0 kind u8 | 1 mode u8 | 2 nameLen u8 | 3 zero          |
//	    |  4 gaugeSet u32 | 8 gaugeValue u64 | 16 name [256]byte  |
//	    +--------------------------------------------------------+
//	    | ring: ringRecords records of wire.RecordSize bytes      |
//	    |       (ringOffset is a multiple of 64)                  |
//	    +--------------------------------------------------------+
const (
	// Magic is the first 8 bytes of every file.
	Magic = "TAPESHM\x00"
	// Version is the layout version this package reads and writes. Version
	// 2 added the CLAIMING state, the claimWaits and refused header words
	// and the trailer's canary; 3 the doorbell, which made the header 640
	// bytes: a client of version 2 would take the doorbell for its first
	// slot, so it must refuse the file, not misread it.
	Version = 3

	// HeaderSize is the Geometry and wake-up lines (128 bytes) and the
	// doorbell (BellSize).
	HeaderSize = HdrBell + BellSize
	// BellSize is the doorbell: one bit per slot, for MaxSlots slots
	// whatever the file's count, so that every offset is a constant.
	BellSize = MaxSlots / 8
	// TrailerSize is the line after the last slot; its last 8 bytes are
	// the attached host's canary: any shrinking of the file zeroes it, even
	// if the file is grown back before the host looks at its size.
	TrailerSize = 64

	HdrMagic      = 0
	HdrVersion    = 8
	HdrHeaderSize = 12
	HdrSlots      = 16
	HdrRingRecs   = 20
	HdrMaxDefs    = 24
	HdrDefSize    = 28
	HdrSlotSize   = 32
	HdrFileSize   = 40
	HdrDefOffset  = 48
	HdrRingOffset = 52
	HdrReserved   = 56  // zero up to HdrWait
	HdrWait       = 64  // u32 on the host's own cache line: 1 while the host sleeps in futex wait
	HdrWaitZero   = 68  // u32, zero
	HdrClaimWaits = 72  // u64, workers: claim scans that found no free slot (atomic add)
	HdrRefused    = 80  // u64, workers: Opens that gave up with ErrNoSlot (atomic add)
	HdrHostOwned  = 88  // up to HdrBell: the host's, readers ignore it
	HdrBell       = 128 // the doorbell words (u64): workers OR their slot's bit, the host swaps words to 0

	// The canary is the trailer's last 8 bytes, and its top byte (the
	// file's last) is never zero: cutting even one byte off the file and
	// growing it back changes it.
	TrailerCanary = TrailerSize - 8

	CacheLine = 64

	SlotState    = 0   // u64, CAS by worker (claim, close) and host (reclaim)
	SlotStart    = 8   // u64, written by the worker after its claim
	SlotReserve  = 64  // u64, worker: records claimed
	SlotDropped  = 72  // u64, worker: records dropped because the ring was full
	SlotDefCount = 80  // u64, worker: definitions published
	SlotConsumer = 192 // u64, host: records consumed
	SlotTaking   = 200 // u64, host: records being released (crash recovery)
	SlotDefs     = 256 // first definition entry

	// DefSize is the size of one metric-definition entry.
	DefSize = 272

	DefKind     = 0
	DefMode     = 1
	DefNameLen  = 2
	DefZero     = 3
	DefGaugeSet = 4 // u32: 1 once gaugeValue holds a value
	DefGaugeVal = 8 // u64: float64 bits of the last value set
	DefName     = 16
	DefNameCap  = 256
)

// Slot states, in the low byte of the state word.
const (
	StateFree       = 0 // claimable by a worker
	StateActive     = 1 // owned by the worker whose pid is in the high 32 bits
	StateClosed     = 2 // the worker closed its client; the host drains, then frees
	StateReclaiming = 3 // the host is resetting the slot
	StateClaiming   = 4 // the worker whose pid is in the high 32 bits is scrubbing the slot it claimed
)

// Limits on the geometry, checked on create and attach.
const (
	MaxSlots       = 4096
	MinRingRecords = 2
	MaxRingRecords = 1 << 24
	MaxDefsLimit   = 1 << 16
)

func PackState(pid uint32, gen uint32, state uint8) uint64 {
	return uint64(pid)<<32 | uint64(gen&0xffffff)<<8 | uint64(state)
}

func UnpackState(w uint64) (pid uint32, gen uint32, state uint8) {
	return uint32(w >> 32), uint32(w>>8) & 0xffffff, uint8(w)
}

// Geometry is the validated shape of a file; it lives in Go memory so that
// nothing a worker scribbles into the header later can change what the host
// believes about bounds.
type Geometry struct {
	Slots      int
	RingRecs   int
	MaxDefs    int
	SlotSize   int
	FileSize   int
	DefOffset  int
	RingOffset int
}

func Align(n, a int) int { return (n + a - 1) / a * a }

func NewGeometry(slots, ringRecs, maxDefs int) (Geometry, error) {
	switch {
	case slots < 1 || slots > MaxSlots:
		return Geometry{}, fmt.Errorf("%d slots; must be 1..%d", slots, MaxSlots)
	case ringRecs < MinRingRecords || ringRecs > MaxRingRecords || ringRecs&(ringRecs-1) != 0:
		return Geometry{}, fmt.Errorf("%d ring records; must be a power of two in %d..%d", ringRecs, MinRingRecords, MaxRingRecords)
	case maxDefs < 1 || maxDefs > MaxDefsLimit:
		return Geometry{}, fmt.Errorf("%d metric definitions per worker; must be 1..%d", maxDefs, MaxDefsLimit)
	}
	g := Geometry{Slots: slots, RingRecs: ringRecs, MaxDefs: maxDefs, DefOffset: SlotDefs}
	g.RingOffset = Align(SlotDefs+maxDefs*DefSize, CacheLine)
	g.SlotSize = Align(g.RingOffset+ringRecs*wire.RecordSize, CacheLine)
	g.FileSize = HeaderSize + slots*g.SlotSize + TrailerSize
	return g, nil
}

func (g Geometry) SlotOff(i int) int { return HeaderSize + i*g.SlotSize }

func (g Geometry) TrailerOff() int { return g.FileSize - TrailerSize }

func (g Geometry) PutHeader(b []byte) {
	copy(b[HdrMagic:], Magic)
	le := binary.LittleEndian
	le.PutUint32(b[HdrVersion:], Version)
	le.PutUint32(b[HdrHeaderSize:], HeaderSize)
	le.PutUint32(b[HdrSlots:], uint32(g.Slots))
	le.PutUint32(b[HdrRingRecs:], uint32(g.RingRecs))
	le.PutUint32(b[HdrMaxDefs:], uint32(g.MaxDefs))
	le.PutUint32(b[HdrDefSize:], DefSize)
	le.PutUint64(b[HdrSlotSize:], uint64(g.SlotSize))
	le.PutUint64(b[HdrFileSize:], uint64(g.FileSize))
	le.PutUint32(b[HdrDefOffset:], uint32(g.DefOffset))
	le.PutUint32(b[HdrRingOffset:], uint32(g.RingOffset))
}

// Errors of file validation, matched with errors.Is.
var (
	ErrNotShm     = errors.New("shm: not a tapes shm file (bad magic)")
	ErrVersion    = errors.New("shm: unsupported layout version")
	ErrCorrupt    = errors.New("shm: corrupt header")
	ErrTruncated  = errors.New("shm: file shorter than its header says")
	ErrReplaced   = errors.New("shm: file replaced or removed")
	ErrLocked     = errors.New("shm: another host is draining this file")
	ErrNoSlot     = errors.New("shm: no free worker slot")
	ErrClosed     = errors.New("shm: closed")
	ErrNotOwner   = errors.New("shm: file or directory owned by another user")
	ErrBadPerm    = errors.New("shm: accessible to other users")
	ErrNotRegular = errors.New("shm: not a regular file")
)

// ValidateHeader checks a header against itself and the size of the file
// it came from, and returns the Geometry it describes.
func ValidateHeader(b []byte, size int64) (Geometry, error) {
	if len(b) < HeaderSize || size < HeaderSize {
		return Geometry{}, fmt.Errorf("%w: %d bytes, the header alone is %d", ErrTruncated, size, HeaderSize)
	}
	if string(b[HdrMagic:HdrMagic+8]) != Magic {
		return Geometry{}, ErrNotShm
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[HdrVersion:]); v != Version {
		return Geometry{}, fmt.Errorf("%w %d (this build reads %d): the file belongs to another tapes release; stop its host and workers and remove the file", ErrVersion, v, Version)
	}
	if hs := le.Uint32(b[HdrHeaderSize:]); hs != HeaderSize {
		return Geometry{}, fmt.Errorf("%w: header size %d, want %d", ErrCorrupt, hs, HeaderSize)
	}
	if ds := le.Uint32(b[HdrDefSize:]); ds != DefSize {
		return Geometry{}, fmt.Errorf("%w: definition size %d, want %d", ErrCorrupt, ds, DefSize)
	}
	g, err := NewGeometry(int(le.Uint32(b[HdrSlots:])), int(le.Uint32(b[HdrRingRecs:])), int(le.Uint32(b[HdrMaxDefs:])))
	if err != nil {
		return Geometry{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if ss := le.Uint64(b[HdrSlotSize:]); ss != uint64(g.SlotSize) {
		return Geometry{}, fmt.Errorf("%w: slot size %d, the Geometry gives %d", ErrCorrupt, ss, g.SlotSize)
	}
	if fs := le.Uint64(b[HdrFileSize:]); fs != uint64(g.FileSize) {
		return Geometry{}, fmt.Errorf("%w: file size field %d, the Geometry gives %d", ErrCorrupt, fs, g.FileSize)
	}
	if do := le.Uint32(b[HdrDefOffset:]); do != uint32(g.DefOffset) {
		return Geometry{}, fmt.Errorf("%w: definition offset %d, want %d", ErrCorrupt, do, g.DefOffset)
	}
	if ro := le.Uint32(b[HdrRingOffset:]); ro != uint32(g.RingOffset) {
		return Geometry{}, fmt.Errorf("%w: ring offset %d, want %d", ErrCorrupt, ro, g.RingOffset)
	}
	for _, c := range b[HdrReserved:HdrWait] {
		if c != 0 {
			return Geometry{}, fmt.Errorf("%w: reserved header bytes are not zero", ErrCorrupt)
		}
	}
	if le.Uint32(b[HdrWaitZero:]) != 0 {
		return Geometry{}, fmt.Errorf("%w: reserved header bytes are not zero", ErrCorrupt)
	}
	if size < int64(g.FileSize) {
		return Geometry{}, fmt.Errorf("%w: %d bytes, the header describes %d", ErrTruncated, size, g.FileSize)
	}
	return g, nil
}

// U64 and U32 point at a word of the mapping m, for atomic access; off
// must be aligned.
func U64(m []byte, off int) *uint64 { return (*uint64)(unsafe.Pointer(&m[off])) }
func U32(m []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&m[off])) }
