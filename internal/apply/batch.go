package apply

import (
	"encoding/binary"
	"math"
	"math/bits"
	"time"

	"github.com/tapes-go/tapes/wire"
)

// Batch gathers records for one Table and applies them: the records of a
// counter or meter summed per metric and applied once per batch (or when
// another metric needs their slot), consecutive records of one timer or
// histogram gathered (up to runSlots of them at once, so a worker
// interleaving its timers keeps full runs) and applied with one UpdateMany
// each, gauges applied record by record,
// in order. A Batch belongs to one goroutine; its zero value is ready, and
// Flush leaves it ready for the next batch.
//
// Records arrive as their two words (wire.Word0's first word, and the
// value): Apply reads them from bytes (a guest's batch), Add takes them
// one at a time (a ring read word by word, as the shm host reads it).
type Batch struct {
	// filled has bit i set for slots[i] in use and bit sumSlots+j for
	// runs[j], so that Flush visits those alone: the batch is 4.6 KB, and
	// a host pass draining one record found all of it evicted, a miss per
	// line Flush looked at (14; the host's drainSlot fell from 3.0 to 2.4
	// µs for one record). The scalars come first, on the slots' first line.
	filled    uint32
	rejected  int32
	prev      uint64 // the previous record's first word
	last      wire.Status
	discarded int // records of Discard entries since the last Flush
	slots     [sumSlots]sumSlot
	runs      [runSlots]valueRun
}

// One bit of Batch.filled for each slot and run.
var _ [32 - sumSlots - runSlots]struct{}

// sumSlot accumulates the records of one counter or meter. w0 is the
// records' first word (id, kind, zero reserved bytes), checked against the
// table when the slot was filled; it is 0 in an empty slot, and a record
// whose first word is 0 is rejected before a slot is looked for.
type sumSlot struct {
	w0  uint64
	n   int32  // records summed, for the rejection count
	sum uint64 // two's complement sum of their int64 values
}

// sumSlots is how many counters and meters a batch sums at once (by id
// modulo sumSlots; ids are dense, so a table's first metrics never
// collide).
const sumSlots = 16

// runSlots is how many timers and histograms a batch gathers values for
// at once (by id modulo runSlots, like sumSlots). One run made a worker
// that interleaves two timers apply them a value at a time: 2.7x the
// drain's cost per record on a counter/timer/histogram mix.
const runSlots = 8

// valueRun gathers the records of one timer or histogram.
type valueRun struct {
	w0 uint64 // 0: empty
	n  int
	v  [64]uint64 // the records' value bits
}

func (b *Batch) fail(n int32, st wire.Status) {
	b.rejected += n
	b.last = st
}

// Add gathers one record. It returns wire.StatusOK if the record was
// applied or gathered, and otherwise why it was rejected:
// wire.StatusBadRecord (Decode's checks), wire.StatusUnknownID (an id past
// the table: a reader whose table may be behind its writer can extend the
// table and Add the record again) or wire.StatusWrongKind. Add does not
// count what it returns (the caller decides, and may retry); a negative
// timer duration in a run is found, and counted, by Flush.
func (b *Batch) Add(t Table, w0, v uint64) wire.Status {
	if w0 != 0 && w0 != b.prev {
		if s := &b.slots[uint32(w0)%sumSlots]; s.w0 == w0 {
			s.sum += v
			s.n++
			b.prev = w0
			return wire.StatusOK
		}
	}
	return b.add(t, w0, v)
}

// add is Add's path for a record whose first word is not that of a
// filled slot, or repeats the previous record's.
func (b *Batch) add(t Table, w0, v uint64) wire.Status {
	if w0 == 0 { // kind 0: invalid, and it would match an empty slot or run
		return wire.StatusBadRecord
	}
	s := &b.slots[uint32(w0)%sumSlots]
	if s.w0 == w0 {
		s.sum += v
		s.n++
		return wire.StatusOK
	}
	b.prev = w0
	if run := &b.runs[uint32(w0)%runSlots]; run.w0 == w0 && run.n < len(run.v) {
		run.v[run.n] = v
		run.n++
		return wire.StatusOK
	}
	r, err := wire.DecodeWords(w0, v)
	if err != nil {
		return wire.StatusBadRecord
	}
	e, st := t.lookup(r.ID, r.Kind)
	if st != wire.StatusOK {
		return st
	}
	if e.discard { // never fills a slot or a run: each record comes here
		b.discarded++
		return wire.StatusOK
	}
	switch r.Kind {
	case wire.KindCounter, wire.KindMeter:
		if s.w0 != 0 {
			s.apply(t)
		}
		*s = sumSlot{w0: w0, n: 1, sum: v}
		b.filled |= 1 << (uint32(w0) % sumSlots)
	case wire.KindTimer, wire.KindHistogram:
		run := &b.runs[uint32(w0)%runSlots]
		b.flushRun(t, run)
		run.w0, run.n = w0, 1
		run.v[0] = v
		b.filled |= 1 << (sumSlots + uint32(w0)%runSlots)
	default:
		return e.apply(r.Kind, r.Value)
	}
	return wire.StatusOK
}

// Apply gathers the records in buf (len(buf)/wire.RecordSize of them; a
// shorter tail is ignored), counting the ones it rejects for Flush. Its
// loop keeps Add's common cases inline, with the previous record's word in
// a register (a call per record, or a store of it per record, cost the
// batched paths 20-30%), and sums a run of one counter's records in
// registers: that is a guest recording in a loop.
func (b *Batch) Apply(t Table, buf []byte) {
	prev, slots, runs := b.prev, &b.slots, &b.runs
	for ; len(buf) >= wire.RecordSize; buf = buf[wire.RecordSize:] {
		w0 := binary.LittleEndian.Uint64(buf[wire.RecordIDOff:])
		v := binary.LittleEndian.Uint64(buf[wire.RecordValueOff:])
		if w0 == 0 {
			b.fail(1, wire.StatusBadRecord)
			continue
		}
		s := &slots[uint32(w0)%sumSlots]
		if s.w0 == w0 { // the common case: a counter this batch already saw
			if w0 != prev {
				s.sum += v
				s.n++
				prev = w0
				continue
			}
			// The second record of a run: sum the rest of the run.
			sum, n := s.sum+v, s.n+1
			for len(buf) >= 2*wire.RecordSize && binary.LittleEndian.Uint64(buf[wire.RecordSize+wire.RecordIDOff:]) == w0 {
				buf = buf[wire.RecordSize:]
				sum += binary.LittleEndian.Uint64(buf[wire.RecordValueOff:])
				n++
			}
			s.sum, s.n = sum, n
			continue
		}
		prev = w0
		if run := &runs[uint32(w0)%runSlots]; run.w0 == w0 && run.n < len(run.v) { // a timer's or histogram's run
			run.v[run.n] = v
			run.n++
			continue
		}
		if st := b.add(t, w0, v); st != wire.StatusOK {
			b.fail(1, st)
		}
	}
	b.prev = prev
}

// Discarded returns how many records of Discard entries the batch has
// accepted since the last Flush (which resets it: read it first).
func (b *Batch) Discarded() int { return b.discarded }

// Flush applies everything gathered and returns how many records of the
// batch were rejected (by Apply, or here: negative durations) and the last
// reason, then empties the batch.
func (b *Batch) Flush(t Table) (rejected int32, last wire.Status) {
	for m := b.filled >> sumSlots; m != 0; m &= m - 1 {
		b.flushRun(t, &b.runs[bits.TrailingZeros32(m)])
	}
	for m := b.filled & (1<<sumSlots - 1); m != 0; m &= m - 1 {
		s := &b.slots[bits.TrailingZeros32(m)]
		s.apply(t)
		*s = sumSlot{}
	}
	b.filled = 0
	rejected, last = b.rejected, b.last
	b.prev, b.rejected, b.last, b.discarded = 0, 0, wire.StatusOK, 0
	return rejected, last
}

// apply applies the slot's sum; its first word was checked against the
// table when the slot was filled, and entries never change.
func (s *sumSlot) apply(t Table) {
	e := &t[wire.WordID(s.w0)]
	if wire.WordKind(s.w0) == wire.KindCounter {
		e.c.Add(int64(s.sum))
	} else {
		e.m.Mark(int64(s.sum))
	}
}

// flushRun applies a run's values (all of one timer or histogram,
// checked against the table when the run began) and empties it. A
// negative duration among them is rejected alone.
func (b *Batch) flushRun(t Table, run *valueRun) {
	n := run.n
	if run.w0 == 0 || n == 0 {
		return
	}
	k, vs := wire.WordKind(run.w0), run.v[:n]
	e := &t[wire.WordID(run.w0)]
	run.w0, run.n = 0, 0
	if k == wire.KindHistogram {
		if e.hm != nil && n > 1 {
			e.hm.UpdateMany(wire.Floats(vs))
			return
		}
		for _, v := range vs {
			e.h.Update(math.Float64frombits(v))
		}
		return
	}
	var bad int
	if e.tm != nil && n > 1 {
		bad = e.tm.UpdateMany(wire.Durations(vs))
	} else {
		for _, v := range vs {
			if int64(v) < 0 {
				bad++
				continue
			}
			e.t.Update(time.Duration(v))
		}
	}
	if bad > 0 {
		b.fail(int32(bad), wire.StatusBadValue)
	}
}
