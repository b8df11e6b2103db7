package registry

import (
	"github.com/tapes-go/tapes/wire"
)

// Kind is a metric type; its values are shared with the shm file format and
// the guest ABI (see package wire).
type Kind = wire.Kind

const (
	KindCounter   = wire.KindCounter
	KindGauge     = wire.KindGauge
	KindMeter     = wire.KindMeter
	KindTimer     = wire.KindTimer
	KindHistogram = wire.KindHistogram
)

// Sentinel errors, matched with errors.Is. Every error the registry returns
// for a name is a *NameError wrapping one of them; they are package wire's,
// which holds the name rule for every path a name comes in by.
var (
	// ErrInvalidName: the name breaks the name rule (see wire.ValidateName).
	ErrInvalidName = wire.ErrInvalidName
	// ErrKindConflict: the name is already used by a metric of another kind.
	ErrKindConflict = wire.ErrKindConflict
	// ErrPrefixConflict: the name is a prefix of another metric's name, or
	// another metric's name is a prefix of it ("a.b" beside "a.b.c"), which
	// the nested Stats tree could not represent.
	ErrPrefixConflict = wire.ErrPrefixConflict
	// ErrInvalidKind: the kind passed to GetOrCreate is not a metric kind.
	ErrInvalidKind = wire.ErrInvalidKind
	// ErrTooManyMetrics: the registry's WithMaxMetrics limit is reached.
	ErrTooManyMetrics = wire.ErrTooManyMetrics
)

// NameError reports why a name could not be used.
type NameError = wire.NameError
