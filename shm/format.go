package shm

import "github.com/tapes-go/tapes/shm/internal/layout"

// The file format is package shm/internal/layout's, shared with the host
// (docs/shm-layout.md specifies every byte). The names below are that
// package's: the public ones for readers of the file, the rest short
// names for this package's code.
const (
	// Magic is the first 8 bytes of every file.
	Magic = layout.Magic
	// Version is the layout version this package reads and writes.
	Version = layout.Version
	// HeaderSize is the geometry and wake-up lines and the doorbell.
	HeaderSize = layout.HeaderSize
	// BellSize is the doorbell: one bit per slot, for MaxSlots slots.
	BellSize = layout.BellSize
	// TrailerSize is the line after the last slot (the host's canary).
	TrailerSize = layout.TrailerSize
	// CacheLine is the unit the slot's fields are laid out in.
	CacheLine = layout.CacheLine
	// DefSize is the size of one metric-definition entry.
	DefSize = layout.DefSize
)

// Slot states, in the low byte of the state word.
const (
	StateFree       = layout.StateFree       // claimable by a worker
	StateActive     = layout.StateActive     // owned by the worker whose pid is in the high 32 bits
	StateClosed     = layout.StateClosed     // the worker closed its client; the host drains, then frees
	StateReclaiming = layout.StateReclaiming // the host is resetting the slot
	StateClaiming   = layout.StateClaiming   // the worker whose pid is in the high 32 bits is scrubbing the slot it claimed
)

// Limits on the geometry, checked by the host on create and attach and by
// Open and Inspect on every file they read.
const (
	MaxSlots       = layout.MaxSlots
	MinRingRecords = layout.MinRingRecords
	MaxRingRecords = layout.MaxRingRecords
	MaxDefsLimit   = layout.MaxDefsLimit
)

// Errors of file validation and of the client, matched with errors.Is.
// The host (package shm/host) returns the same values.
var (
	ErrNotShm     = layout.ErrNotShm
	ErrVersion    = layout.ErrVersion
	ErrCorrupt    = layout.ErrCorrupt
	ErrTruncated  = layout.ErrTruncated
	ErrNoSlot     = layout.ErrNoSlot
	ErrClosed     = layout.ErrClosed
	ErrNotOwner   = layout.ErrNotOwner
	ErrBadPerm    = layout.ErrBadPerm
	ErrNotRegular = layout.ErrNotRegular
)

const (
	hdrWait       = layout.HdrWait
	hdrClaimWaits = layout.HdrClaimWaits
	hdrRefused    = layout.HdrRefused
	hdrBell       = layout.HdrBell

	slotState    = layout.SlotState
	slotStart    = layout.SlotStart
	slotReserve  = layout.SlotReserve
	slotDropped  = layout.SlotDropped
	slotDefCount = layout.SlotDefCount
	slotConsumer = layout.SlotConsumer
	slotDefs     = layout.SlotDefs

	defKind     = layout.DefKind
	defMode     = layout.DefMode
	defNameLen  = layout.DefNameLen
	defGaugeSet = layout.DefGaugeSet
	defGaugeVal = layout.DefGaugeVal
	defName     = layout.DefName
)

type geometry = layout.Geometry

func packState(pid, gen uint32, state uint8) uint64 { return layout.PackState(pid, gen, state) }

func unpackState(w uint64) (pid, gen uint32, state uint8) { return layout.UnpackState(w) }

func validateHeader(b []byte, size int64) (geometry, error) { return layout.ValidateHeader(b, size) }

func u64(m []byte, off int) *uint64 { return layout.U64(m, off) }
func u32(m []byte, off int) *uint32 { return layout.U32(m, off) }
