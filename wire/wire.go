// Package wire is the vocabulary every path of tapes shares: the metric kinds,
// the name rule and the 16-byte event record. The in-process registry, the
// shared-memory rings (shm), the WebAssembly host ABI (hostabi) and the guest
// SDKs all use these definitions, so a kind code or a record means the same
// thing everywhere. The package imports only the standard library (errors,
// fmt, math, time, unsafe, encoding/binary) so that it compiles for GOOS=wasip1 without
// dragging the registry into guests.
//
// The byte-level contract is documented in docs/shm-layout.md and
// docs/guest-abi.md; the constants here are the only place the numbers live.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unsafe"
)

// Kind identifies a metric type. The numeric values are part of the shm file
// format and the guest ABI and must never change.
type Kind uint8

const (
	KindInvalid   Kind = 0
	KindCounter   Kind = 1
	KindGauge     Kind = 2
	KindMeter     Kind = 3
	KindTimer     Kind = 4
	KindHistogram Kind = 5

	kindMax = KindHistogram
)

var kindNames = [...]string{"invalid", "counter", "gauge", "meter", "timer", "histogram"}

func (k Kind) String() string {
	if k.Valid() {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is one of the five metric kinds.
func (k Kind) Valid() bool { return k >= KindCounter && k <= kindMax }

// MaxNameLen is the longest metric name, in bytes.
const MaxNameLen = 255

// ErrInvalidName is wrapped by every name-rule violation.
var ErrInvalidName = errors.New("invalid metric name")

// ValidateName checks the one name rule of tapes: a dotted path whose
// segments are non-empty runs of [A-Za-z0-9_-], at most MaxNameLen bytes in
// all. It returns nil or an error wrapping ErrInvalidName that says what is
// wrong and where. It does not allocate when the name is valid.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalidName, len(name), MaxNameLen)
	}
	segStart := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if i == segStart {
				return fmt.Errorf("%w: %q has an empty segment at byte %d", ErrInvalidName, name, i)
			}
			segStart = i + 1
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: %q has byte %q at %d (segments allow A-Z a-z 0-9 _ -)", ErrInvalidName, name, c, i)
		}
	}
	if segStart == len(name) {
		return fmt.Errorf("%w: %q ends with an empty segment", ErrInvalidName, name)
	}
	return nil
}

// Event record layout (little-endian), RecordSize bytes:
//
//	 0               4       5               8                              16
//	+---------------+-------+---------------+-------------------------------+
//	| id (uint32)   | kind  | reserved (0)  | value (int64 or float64 bits) |
//	+---------------+-------+---------------+-------------------------------+
//
// The value is interpreted by kind:
//
//	counter    int64   delta added to the counter (negative decrements)
//	meter      int64   number of events marked
//	timer      int64   one observed duration in nanoseconds
//	histogram  float64 one observed value (IEEE 754 bits)
//	gauge      float64 the gauge's new value (IEEE 754 bits)
//
// The kind byte repeats the kind the id was defined with, so a reader can
// reject a record whose id and kind disagree instead of misreading its value.
const (
	RecordSize     = 16
	RecordIDOff    = 0
	RecordKindOff  = 4
	RecordResvOff  = 5
	RecordValueOff = 8
)

// Record is one decoded event.
type Record struct {
	ID    uint32
	Kind  Kind
	Value uint64 // raw bits; see Int and Float
}

// Int returns the value of a counter, meter or timer record.
func (r Record) Int() int64 { return int64(r.Value) }

// Float returns the value of a histogram or gauge record.
func (r Record) Float() float64 { return math.Float64frombits(r.Value) }

// IsFloat reports whether records of kind k carry a float64.
func IsFloat(k Kind) bool { return k == KindHistogram || k == KindGauge }

// IntRecord builds a counter, meter or timer record.
func IntRecord(id uint32, k Kind, v int64) Record { return Record{ID: id, Kind: k, Value: uint64(v)} }

// FloatRecord builds a histogram or gauge record.
func FloatRecord(id uint32, k Kind, v float64) Record {
	return Record{ID: id, Kind: k, Value: math.Float64bits(v)}
}

// Put encodes r into b[:RecordSize]. b must be at least RecordSize long.
func (r Record) Put(b []byte) {
	_ = b[RecordSize-1]
	binary.LittleEndian.PutUint32(b[RecordIDOff:], r.ID)
	b[RecordKindOff] = byte(r.Kind)
	b[RecordResvOff], b[RecordResvOff+1], b[RecordResvOff+2] = 0, 0, 0
	binary.LittleEndian.PutUint64(b[RecordValueOff:], r.Value)
}

// Errors returned by Decode. Callers count them; they never panic.
var (
	ErrShortRecord = errors.New("record shorter than 16 bytes")
	ErrBadKind     = errors.New("record kind byte is not a metric kind")
	ErrReserved    = errors.New("record reserved bytes are not zero")
)

// Decode reads one record from b. It validates only what the record itself
// can tell (length, kind byte, reserved bytes); whether the id is defined and
// has that kind is for the caller, which owns the id table.
func Decode(b []byte) (Record, error) {
	if len(b) < RecordSize {
		return Record{}, ErrShortRecord
	}
	return DecodeWords(binary.LittleEndian.Uint64(b[RecordIDOff:]), binary.LittleEndian.Uint64(b[RecordValueOff:]))
}

// A record is also two little-endian 64-bit words: the first holds the id,
// the kind byte and the zero reserved bytes (Word0), the second the value.
// Writers that store a record as two words (the shm client, whose commit
// is the store of the first; the Go guest SDK) build the first with Word0,
// and readers that load two words (the shm host, the plugin host) decode
// them with DecodeWords, so neither copies a record into bytes.
var _ = [1]struct{}{}[RecordValueOff-8] // the value is the whole second word

// Word0 returns a record's first word.
func Word0(id uint32, k Kind) uint64 {
	return uint64(id)<<(8*RecordIDOff) | uint64(k)<<(8*RecordKindOff)
}

// WordKind returns the kind byte of a first word; 0 (no kind) means no
// record was written there.
func WordKind(w0 uint64) Kind { return Kind(w0 >> (8 * RecordKindOff)) }

// WordID returns the metric id of a first word.
func WordID(w0 uint64) uint32 { return uint32(w0 >> (8 * RecordIDOff)) }

// Durations reads the second words of timer records (int64 nanoseconds)
// as durations, and Floats those of histogram or gauge records (float64
// bits) as floats, without copying: a host gathers a metric's values as
// the words it read and hands them to Timer.UpdateMany or
// Histogram.UpdateMany as they are.
func Durations(vs []uint64) []time.Duration {
	return unsafe.Slice((*time.Duration)(unsafe.Pointer(unsafe.SliceData(vs))), len(vs))
}

// Floats: see Durations.
func Floats(vs []uint64) []float64 {
	return unsafe.Slice((*float64)(unsafe.Pointer(unsafe.SliceData(vs))), len(vs))
}

// DecodeWords is Decode for a record read as its two words.
func DecodeWords(w0, w1 uint64) (Record, error) {
	r := Record{ID: WordID(w0), Kind: WordKind(w0), Value: w1}
	if !r.Kind.Valid() {
		return Record{}, ErrBadKind
	}
	if w0>>(8*RecordResvOff) != 0 {
		return Record{}, ErrReserved
	}
	return r, nil
}
