// Package apply applies decoded event records to the metrics their ids
// name: the one path from wire records to the registry (or any metrics with
// the registry's record methods) that every reader of records shares. The
// WebAssembly host module (hostabi) applies guests' batches with it, and
// the shm host the records it reads from workers' rings (plugin processes
// record through a ring too).
//
// A Table maps ids to metrics; a Batch gathers records and applies them
// together: the records of one counter or meter summed into one Add or
// Mark, runs of one timer's or histogram's values handed over with one
// UpdateMany. Applying a batch at one instant changes nothing a reader can
// see (Add(a) then Add(b) is Add(a+b)), and a loop of records costs one
// atomic add per counter instead of one per record.
package apply

import (
	"math"
	"time"

	"github.com/tapes-go/tapes/wire"
)

// The record methods a metric of each kind has; the registry's metric
// types and shm's handles have them.
type (
	Counter   interface{ Add(int64) }
	Meter     interface{ Mark(int64) }
	Timer     interface{ Update(time.Duration) }
	Histogram interface{ Update(float64) }
	Gauge     interface{ Set(float64) }

	// The registry's batch forms, used for runs of values when a timer or
	// histogram has them; other metrics get one Update per value.
	TimerMany     interface{ UpdateMany([]time.Duration) int }
	HistogramMany interface{ UpdateMany([]float64) }
)

// Entry is what a Table holds for one id: the kind the id was defined with
// and its metric's record method, so that applying a record is a switch
// and one call instead of a type assertion. The zero Entry names no metric.
type Entry struct {
	kind    wire.Kind
	discard bool // see Discard
	c       Counter
	g       Gauge
	m       Meter
	t       Timer
	h       Histogram
	tm      TimerMany
	hm      HistogramMany
}

// NewEntry is the entry for m, defined with kind k; false if m lacks the
// kind's record method.
func NewEntry(k wire.Kind, m any) (Entry, bool) {
	e := Entry{kind: k}
	var ok bool
	switch k {
	case wire.KindCounter:
		e.c, ok = m.(Counter)
	case wire.KindGauge:
		e.g, ok = m.(Gauge)
	case wire.KindMeter:
		e.m, ok = m.(Meter)
	case wire.KindTimer:
		e.t, ok = m.(Timer)
		e.tm, _ = m.(TimerMany)
	case wire.KindHistogram:
		e.h, ok = m.(Histogram)
		e.hm, _ = m.(HistogramMany)
	}
	return e, ok
}

// Discard is the entry of an id whose records are well-formed but go
// nowhere: a definition its reader refused (the shm host refuses names in
// its own tapes.* space, for one). A Batch accepts such records and counts
// them (Discarded) instead of rejecting them; One answers StatusOK.
func Discard(k wire.Kind) Entry { return Entry{kind: k, discard: true} }

// Kind returns the kind the entry was defined with.
func (e *Entry) Kind() wire.Kind { return e.kind }

// Table is an id table: index = id. Entries never change once a reader may
// see them; a writer that defines ids appends and publishes the longer
// slice (hostabi keeps it in an atomic.Pointer).
type Table []Entry

// lookup finds the metric a record names, which must have the record's
// kind.
func (t Table) lookup(id uint32, k wire.Kind) (*Entry, wire.Status) {
	if uint64(id) >= uint64(len(t)) {
		return nil, wire.StatusUnknownID
	}
	if e := &t[id]; e.kind == k {
		return e, wire.StatusOK
	}
	return nil, wire.StatusWrongKind
}

// One applies one event of kind k to id's metric; v holds its value bits
// as a record carries them (int64 two's complement or float64 bits).
func (t Table) One(id uint32, k wire.Kind, v uint64) wire.Status {
	e, st := t.lookup(id, k)
	if st != wire.StatusOK {
		return st
	}
	return e.apply(k, v)
}

func (e *Entry) apply(k wire.Kind, v uint64) wire.Status {
	if e.discard {
		return wire.StatusOK
	}
	switch k {
	case wire.KindCounter:
		e.c.Add(int64(v))
	case wire.KindMeter:
		e.m.Mark(int64(v))
	case wire.KindTimer:
		if int64(v) < 0 {
			return wire.StatusBadValue
		}
		e.t.Update(time.Duration(v))
	case wire.KindHistogram:
		e.h.Update(math.Float64frombits(v))
	case wire.KindGauge:
		e.g.Set(math.Float64frombits(v))
	}
	return wire.StatusOK
}
