package shm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tapes-go/tapes/wire"
)

// The file layout. docs/shm-layout.md specifies every byte; these constants
// are the only place the numbers live in Go. All integers are little-endian.
//
//	File
//	 0                                                          HeaderSize
//	+------------------------------------------------------------+
//	| header (geometry written once by the creating host; the    |
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
	// 2 added the CLAIMING state, the claimWaits and refused header words,
	// the doorbell and the trailer's canary.
	Version = 2

	// HeaderSize is the geometry and wake-up lines (128 bytes) and the
	// doorbell (BellSize).
	HeaderSize = hdrBell + BellSize
	// BellSize is the doorbell: one bit per slot, for MaxSlots slots
	// whatever the file's count, so that every offset is a constant.
	BellSize = MaxSlots / 8
	// TrailerSize is the line after the last slot; its last 8 bytes are
	// the attached host's canary: any shrinking of the file zeroes it, even
	// if the file is grown back before the host looks at its size.
	TrailerSize = 64

	hdrMagic      = 0
	hdrVersion    = 8
	hdrHeaderSize = 12
	hdrSlots      = 16
	hdrRingRecs   = 20
	hdrMaxDefs    = 24
	hdrDefSize    = 28
	hdrSlotSize   = 32
	hdrFileSize   = 40
	hdrDefOffset  = 48
	hdrRingOffset = 52
	hdrReserved   = 56  // zero up to hdrWait
	hdrWait       = 64  // u32 on the host's own cache line: 1 while the host sleeps in futex wait
	hdrWaitZero   = 68  // u32, zero
	hdrClaimWaits = 72  // u64, workers: claim scans that found no free slot (atomic add)
	hdrRefused    = 80  // u64, workers: Opens that gave up with ErrNoSlot (atomic add)
	hdrHostOwned  = 88  // up to hdrBell: the host's, readers ignore it
	hdrBell       = 128 // the doorbell words (u64): workers OR their slot's bit, the host swaps words to 0

	// The canary is the trailer's last 8 bytes, and its top byte (the
	// file's last) is never zero: cutting even one byte off the file and
	// growing it back changes it.
	trailerCanary = TrailerSize - 8

	CacheLine = 64

	slotState    = 0   // u64, CAS by worker (claim, close) and host (reclaim)
	slotStart    = 8   // u64, written by the worker after its claim
	slotReserve  = 64  // u64, worker: records claimed
	slotDropped  = 72  // u64, worker: records dropped because the ring was full
	slotDefCount = 80  // u64, worker: definitions published
	slotConsumer = 192 // u64, host: records consumed
	slotTaking   = 200 // u64, host: records being released (crash recovery)
	slotDefs     = 256 // first definition entry

	// DefSize is the size of one metric-definition entry.
	DefSize = 272

	defKind     = 0
	defMode     = 1
	defNameLen  = 2
	defZero     = 3
	defGaugeSet = 4 // u32: 1 once gaugeValue holds a value
	defGaugeVal = 8 // u64: float64 bits of the last value set
	defName     = 16
	defNameCap  = 256
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

func packState(pid uint32, gen uint32, state uint8) uint64 {
	return uint64(pid)<<32 | uint64(gen&0xffffff)<<8 | uint64(state)
}

func unpackState(w uint64) (pid uint32, gen uint32, state uint8) {
	return uint32(w >> 32), uint32(w>>8) & 0xffffff, uint8(w)
}

// geometry is the validated shape of a file; it lives in Go memory so that
// nothing a worker scribbles into the header later can change what the host
// believes about bounds.
type geometry struct {
	slots      int
	ringRecs   int
	maxDefs    int
	slotSize   int
	fileSize   int
	defOffset  int
	ringOffset int
}

func align(n, a int) int { return (n + a - 1) / a * a }

func newGeometry(slots, ringRecs, maxDefs int) (geometry, error) {
	switch {
	case slots < 1 || slots > MaxSlots:
		return geometry{}, fmt.Errorf("%d slots; must be 1..%d", slots, MaxSlots)
	case ringRecs < MinRingRecords || ringRecs > MaxRingRecords || ringRecs&(ringRecs-1) != 0:
		return geometry{}, fmt.Errorf("%d ring records; must be a power of two in %d..%d", ringRecs, MinRingRecords, MaxRingRecords)
	case maxDefs < 1 || maxDefs > MaxDefsLimit:
		return geometry{}, fmt.Errorf("%d metric definitions per worker; must be 1..%d", maxDefs, MaxDefsLimit)
	}
	g := geometry{slots: slots, ringRecs: ringRecs, maxDefs: maxDefs, defOffset: slotDefs}
	g.ringOffset = align(slotDefs+maxDefs*DefSize, CacheLine)
	g.slotSize = align(g.ringOffset+ringRecs*wire.RecordSize, CacheLine)
	g.fileSize = HeaderSize + slots*g.slotSize + TrailerSize
	return g, nil
}

func (g geometry) slotOff(i int) int { return HeaderSize + i*g.slotSize }

func (g geometry) trailerOff() int { return g.fileSize - TrailerSize }

func (g geometry) putHeader(b []byte) {
	copy(b[hdrMagic:], Magic)
	le := binary.LittleEndian
	le.PutUint32(b[hdrVersion:], Version)
	le.PutUint32(b[hdrHeaderSize:], HeaderSize)
	le.PutUint32(b[hdrSlots:], uint32(g.slots))
	le.PutUint32(b[hdrRingRecs:], uint32(g.ringRecs))
	le.PutUint32(b[hdrMaxDefs:], uint32(g.maxDefs))
	le.PutUint32(b[hdrDefSize:], DefSize)
	le.PutUint64(b[hdrSlotSize:], uint64(g.slotSize))
	le.PutUint64(b[hdrFileSize:], uint64(g.fileSize))
	le.PutUint32(b[hdrDefOffset:], uint32(g.defOffset))
	le.PutUint32(b[hdrRingOffset:], uint32(g.ringOffset))
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

// validateHeader checks a header against itself and the size of the file
// it came from, and returns the geometry it describes.
func validateHeader(b []byte, size int64) (geometry, error) {
	if len(b) < HeaderSize || size < HeaderSize {
		return geometry{}, fmt.Errorf("%w: %d bytes, the header alone is %d", ErrTruncated, size, HeaderSize)
	}
	if string(b[hdrMagic:hdrMagic+8]) != Magic {
		return geometry{}, ErrNotShm
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[hdrVersion:]); v != Version {
		return geometry{}, fmt.Errorf("%w %d (this build reads %d): the file belongs to another tapes release; stop its host and workers and remove the file", ErrVersion, v, Version)
	}
	if hs := le.Uint32(b[hdrHeaderSize:]); hs != HeaderSize {
		return geometry{}, fmt.Errorf("%w: header size %d, want %d", ErrCorrupt, hs, HeaderSize)
	}
	if ds := le.Uint32(b[hdrDefSize:]); ds != DefSize {
		return geometry{}, fmt.Errorf("%w: definition size %d, want %d", ErrCorrupt, ds, DefSize)
	}
	g, err := newGeometry(int(le.Uint32(b[hdrSlots:])), int(le.Uint32(b[hdrRingRecs:])), int(le.Uint32(b[hdrMaxDefs:])))
	if err != nil {
		return geometry{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if ss := le.Uint64(b[hdrSlotSize:]); ss != uint64(g.slotSize) {
		return geometry{}, fmt.Errorf("%w: slot size %d, the geometry gives %d", ErrCorrupt, ss, g.slotSize)
	}
	if fs := le.Uint64(b[hdrFileSize:]); fs != uint64(g.fileSize) {
		return geometry{}, fmt.Errorf("%w: file size field %d, the geometry gives %d", ErrCorrupt, fs, g.fileSize)
	}
	if do := le.Uint32(b[hdrDefOffset:]); do != uint32(g.defOffset) {
		return geometry{}, fmt.Errorf("%w: definition offset %d, want %d", ErrCorrupt, do, g.defOffset)
	}
	if ro := le.Uint32(b[hdrRingOffset:]); ro != uint32(g.ringOffset) {
		return geometry{}, fmt.Errorf("%w: ring offset %d, want %d", ErrCorrupt, ro, g.ringOffset)
	}
	for _, c := range b[hdrReserved:hdrWait] {
		if c != 0 {
			return geometry{}, fmt.Errorf("%w: reserved header bytes are not zero", ErrCorrupt)
		}
	}
	if le.Uint32(b[hdrWaitZero:]) != 0 {
		return geometry{}, fmt.Errorf("%w: reserved header bytes are not zero", ErrCorrupt)
	}
	if size < int64(g.fileSize) {
		return geometry{}, fmt.Errorf("%w: %d bytes, the header describes %d", ErrTruncated, size, g.fileSize)
	}
	return g, nil
}
