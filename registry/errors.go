package registry

import (
	"errors"
	"fmt"

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
// for a name is a *NameError wrapping one of them.
var (
	// ErrInvalidName: the name breaks the name rule (see wire.ValidateName).
	ErrInvalidName = wire.ErrInvalidName
	// ErrKindConflict: the name is already used by a metric of another kind.
	ErrKindConflict = errors.New("name already used by a metric of another kind")
	// ErrPrefixConflict: the name is a prefix of another metric's name, or
	// another metric's name is a prefix of it ("a.b" beside "a.b.c"), which
	// the nested Stats tree could not represent.
	ErrPrefixConflict = errors.New("name conflicts with another metric's path")
	// ErrInvalidKind: the kind passed to GetOrCreate is not a metric kind.
	ErrInvalidKind = errors.New("not a metric kind")
	// ErrTooManyMetrics: the registry's WithMaxMetrics limit is reached.
	ErrTooManyMetrics = errors.New("registry metric limit reached")
)

// NameError reports why a name could not be used.
type NameError struct {
	Name     string
	Kind     Kind   // the kind that was asked for
	Existing Kind   // for ErrKindConflict: the kind already registered
	Other    string // for ErrPrefixConflict: the metric it collides with
	Err      error  // one of the sentinels above
	detail   error  // the name rule's own message, for ErrInvalidName
}

func (e *NameError) Error() string {
	switch {
	case e.detail != nil:
		return fmt.Sprintf("tapes: %v", e.detail)
	case e.Err == ErrKindConflict:
		return fmt.Sprintf("tapes: %s %q: name already registered as a %s", e.Kind, e.Name, e.Existing)
	case e.Err == ErrPrefixConflict:
		return fmt.Sprintf("tapes: %s %q conflicts with metric %q (a name cannot be both a metric and a path to others)", e.Kind, e.Name, e.Other)
	default:
		return fmt.Sprintf("tapes: %s %q: %v", e.Kind, e.Name, e.Err)
	}
}

func (e *NameError) Unwrap() error { return e.Err }
