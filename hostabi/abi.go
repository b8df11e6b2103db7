// Package hostabi lets WebAssembly guests run by wazero record metrics into a
// tapes registry, through a host module named "tapes" that a guest cannot use
// to harm its host.
//
// Instantiate adds the host module to a wazero.Runtime, like the packages
// under wazero's imports/ directory do; NewPlugin goes further and runs one
// plugin safely: compiled once, a pool of instances of which each serves one
// call at a time, a memory limit, a deadline per call, and every instance
// whose call failed replaced by a fresh one.
//
// The ABI, byte for byte, with its status codes and the reasons behind it, is
// in docs/guest-abi.md. Guests use the Go SDK (guest/tapesguest) or the C
// header (guest/c/tapes.h).
//
//	r := registry.New()
//	rt := wazero.NewRuntime(ctx)
//	defer rt.Close(ctx)
//	if _, err := hostabi.Instantiate(ctx, rt, r, hostabi.WithPrefix("plugins.auth")); err != nil {
//		return err
//	}
//	// instantiate guests that import "tapes" into rt
package hostabi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// ModuleName is the import module name of the host functions.
const ModuleName = "tapes"

// Names of the host functions (see docs/guest-abi.md for their signatures).
const (
	FuncDefine          = "define"
	FuncCounterAdd      = "counter_add"
	FuncMeterMark       = "meter_mark"
	FuncTimerNs         = "timer_ns"
	FuncHistogramUpdate = "histogram_update"
	FuncGaugeSet        = "gauge_set"
	FuncBatch           = "batch"
	// FuncInterruptCheck is not for guests: see AddInterruptChecks.
	FuncInterruptCheck = "interrupt_check"
)

// DefaultMaxMetrics is the number of metrics a plugin may define unless
// WithMaxMetrics says otherwise.
const DefaultMaxMetrics = 4096

// Option configures Instantiate.
type Option func(*config)

type config struct {
	prefix string
	max    int
	stats  *Stats
}

// WithPrefix puts every metric the guests define under prefix: the guest's
// "requests" becomes "plugins.auth.requests" with WithPrefix("plugins.auth").
// The prefix must itself be a valid name; Instantiate fails otherwise.
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// WithMaxMetrics caps how many distinct metrics the guests of this host
// module may define (default DefaultMaxMetrics); define returns
// wire.StatusTooManyMetrics beyond it. n <= 0 means the default.
func WithMaxMetrics(n int) Option { return func(c *config) { c.max = n } }

// WithStats makes the host module count what its guests do into s, so the
// embedding program can report failures a guest may ignore.
func WithStats(s *Stats) Option { return func(c *config) { c.stats = s } }

// Stats counts what guests did through the host module. Read the fields with
// their Load methods; all are cumulative.
type Stats struct {
	Defines  atomic.Uint64 // successful define calls
	Records  atomic.Uint64 // events applied (single calls and batch records)
	Batches  atomic.Uint64 // batch calls that were in bounds
	Rejected atomic.Uint64 // calls and batch records that failed with a status
	// LastStatus is the most recent failure status (a negative wire.Status).
	LastStatus atomic.Int32
}

func (s *Stats) reject(st wire.Status) {
	s.Rejected.Add(1)
	s.LastStatus.Store(int32(st))
}

// metric is one defined id: the kind it was defined with and its record
// method, so recording is a switch and one call instead of a type
// assertion. The batch forms are set when the sink's metric has them (the
// registry's do).
type metric struct {
	kind wire.Kind
	c    counterSink
	g    gaugeSink
	m    meterSink
	t    timerSink
	h    histogramSink
	tm   timerManySink
	hm   histogramManySink
}

// host is the state of one instantiated host module. Ids are per host module
// (one per plugin), not per guest instance: every instance of a plugin that
// defines "hits" gets the same id, so ids stay valid across the instances of
// a pool and across replacements, and the cap bounds the plugin as a whole
// however many instances it runs.
type host struct {
	sink   Sink
	prefix string
	max    int
	stats  *Stats

	ids atomic.Pointer[[]metric] // append-only, published by Store; index = id

	mu     sync.Mutex // serialises define
	byName map[string]int32
}

// Instantiate adds the "tapes" host module to rt, recording into r. Guests
// instantiated into rt afterwards can import its functions. Closing the
// result, or rt, removes the module. A runtime holds at most one module
// named "tapes", so each plugin that needs its own prefix needs its own
// runtime (share a wazero.CompilationCache between them).
func Instantiate(ctx context.Context, rt wazero.Runtime, r *registry.Registry, opts ...Option) (api.Closer, error) {
	if r == nil {
		return nil, fmt.Errorf("hostabi: nil registry")
	}
	return InstantiateSink(ctx, rt, RegistrySink(r), opts...)
}

// InstantiateSink is Instantiate recording into s instead of a registry:
// ClientSink(c) makes the guests of rt record through a shm worker slot.
func InstantiateSink(ctx context.Context, rt wazero.Runtime, s Sink, opts ...Option) (api.Closer, error) {
	h, err := newHost(s, opts...)
	if err != nil {
		return nil, err
	}
	return h.builder(rt).Instantiate(ctx)
}

func newHost(s Sink, opts ...Option) (*host, error) {
	if s == nil {
		return nil, fmt.Errorf("hostabi: nil sink")
	}
	c := config{max: DefaultMaxMetrics}
	for _, o := range opts {
		o(&c)
	}
	if c.max <= 0 {
		c.max = DefaultMaxMetrics
	}
	if c.stats == nil {
		c.stats = new(Stats)
	}
	if c.prefix != "" {
		if err := wire.ValidateName(c.prefix); err != nil {
			return nil, fmt.Errorf("hostabi: prefix: %w", err)
		}
	}
	h := &host{sink: s, prefix: c.prefix, max: c.max, stats: c.stats, byName: map[string]int32{}}
	empty := []metric{}
	h.ids.Store(&empty)
	return h, nil
}

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
	f64 = api.ValueTypeF64
)

func (h *host) builder(rt wazero.Runtime) wazero.HostModuleBuilder {
	b := rt.NewHostModuleBuilder(ModuleName)
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(h.define), []api.ValueType{i32, i32, i32}, []api.ValueType{i32}).
		WithParameterNames("kind", "name_ptr", "name_len").WithResultNames("id_or_status").
		Export(FuncDefine)
	rec := func(name string, fn api.GoFunc, vt api.ValueType) {
		b.NewFunctionBuilder().
			WithGoFunction(fn, []api.ValueType{i32, vt}, []api.ValueType{i32}).
			WithParameterNames("id", "value").WithResultNames("status").
			Export(name)
	}
	rec(FuncCounterAdd, api.GoFunc(func(_ context.Context, s []uint64) { h.one(s, wire.KindCounter) }), i64)
	rec(FuncMeterMark, api.GoFunc(func(_ context.Context, s []uint64) { h.one(s, wire.KindMeter) }), i64)
	rec(FuncTimerNs, api.GoFunc(func(_ context.Context, s []uint64) { h.one(s, wire.KindTimer) }), i64)
	rec(FuncHistogramUpdate, api.GoFunc(func(_ context.Context, s []uint64) { h.one(s, wire.KindHistogram) }), f64)
	rec(FuncGaugeSet, api.GoFunc(func(_ context.Context, s []uint64) { h.one(s, wire.KindGauge) }), f64)
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(h.batch), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("ptr", "n").WithResultNames("rejected_or_status").
		Export(FuncBatch)
	b.NewFunctionBuilder().
		WithGoFunction(api.GoFunc(interruptCheck), nil, []api.ValueType{i32}).
		WithResultNames("fuel").
		Export(FuncInterruptCheck)
	return b
}

func ret(stack []uint64, v int32) { stack[0] = api.EncodeI32(v) }

// interruptCheck is called by the fuel checks the plugin runner adds to a
// guest (internal/interrupt) each time the guest's fuel runs out: it ends
// the call if its context is done, and otherwise returns the next fuel.
// The panic unwinds the guest; wazero returns the *sys.ExitError unwrapped
// from the call, as its own checks do.
func interruptCheck(ctx context.Context, stack []uint64) {
	if err := ctx.Err(); err != nil {
		panic(exitError(err))
	}
	stack[0] = api.EncodeI32(interruptFuel)
}

// define: (kind i32, name_ptr i32, name_len i32) -> id or negative status.
func (h *host) define(_ context.Context, mod api.Module, stack []uint64) {
	kind, ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1]), api.DecodeU32(stack[2])
	id, st := h.defineName(mod, kind, ptr, n)
	if st != wire.StatusOK {
		h.stats.reject(st)
		ret(stack, int32(st))
		return
	}
	h.stats.Defines.Add(1)
	ret(stack, id)
}

func (h *host) defineName(mod api.Module, kind, ptr, n uint32) (int32, wire.Status) {
	k := wire.Kind(kind)
	if kind > 255 || !k.Valid() {
		return 0, wire.StatusInvalidKind
	}
	mem := guestMemory(mod)
	if mem == nil {
		return 0, wire.StatusMemory
	}
	b, ok := mem.Read(ptr, n)
	if !ok {
		return 0, wire.StatusMemory
	}
	if n == 0 || n > wire.MaxNameLen {
		return 0, wire.StatusInvalidName
	}
	name := string(b) // copies: guest memory may change under us
	if h.prefix != "" {
		name = h.prefix + "." + name
	}
	if wire.ValidateName(name) != nil {
		return 0, wire.StatusInvalidName
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if id, ok := h.byName[name]; ok {
		if (*h.ids.Load())[id].kind != k {
			return 0, wire.StatusKindConflict
		}
		return id, wire.StatusOK
	}
	old := *h.ids.Load()
	if len(old) >= h.max || len(old) >= math.MaxInt32 {
		return 0, wire.StatusTooManyMetrics
	}
	m, err := h.sink.Define(k, name)
	if err != nil {
		return 0, statusOf(err)
	}
	e, ok := newMetric(k, m)
	if !ok {
		return 0, wire.StatusInvalidKind
	}
	// Entries never change once published, so appending in place and
	// publishing the longer slice is safe: readers holding the old slice
	// never look past its length. append doubles, so defining n metrics
	// copies O(n) entries in all.
	ids := append(old, e)
	id := int32(len(old))
	h.byName[name] = id
	h.ids.Store(&ids)
	return id, wire.StatusOK
}

// newMetric is the id table entry for m, defined with kind k: false if m
// lacks the kind's record method.
func newMetric(k wire.Kind, m any) (metric, bool) {
	e := metric{kind: k}
	var ok bool
	switch k {
	case wire.KindCounter:
		e.c, ok = m.(counterSink)
	case wire.KindGauge:
		e.g, ok = m.(gaugeSink)
	case wire.KindMeter:
		e.m, ok = m.(meterSink)
	case wire.KindTimer:
		e.t, ok = m.(timerSink)
		e.tm, _ = m.(timerManySink)
	case wire.KindHistogram:
		e.h, ok = m.(histogramSink)
		e.hm, _ = m.(histogramManySink)
	}
	return e, ok
}

// guestMemory is mod's memory, or nil if it has none. wazero's Memory
// returns a non-nil interface holding a nil pointer for a module without
// memory, which would fault on the first Read.
func guestMemory(mod api.Module) api.Memory {
	m := mod.Memory()
	if m == nil {
		return nil
	}
	if v := reflect.ValueOf(m); v.Kind() == reflect.Pointer && v.IsNil() {
		return nil
	}
	return m
}

func statusOf(err error) wire.Status {
	switch {
	case errors.Is(err, registry.ErrInvalidName):
		return wire.StatusInvalidName
	case errors.Is(err, registry.ErrKindConflict):
		return wire.StatusKindConflict
	case errors.Is(err, registry.ErrPrefixConflict):
		return wire.StatusPrefixConflict
	case errors.Is(err, registry.ErrTooManyMetrics):
		return wire.StatusTooManyMetrics
	default:
		return wire.StatusInvalidKind
	}
}

// one serves the five single-event functions: (id i32, value) -> status.
func (h *host) one(stack []uint64, k wire.Kind) {
	ids := *h.ids.Load()
	st := apply(ids, api.DecodeU32(stack[0]), k, stack[1])
	if st != wire.StatusOK {
		h.stats.reject(st)
	} else {
		h.stats.Records.Add(1)
	}
	ret(stack, int32(st))
}

// apply records one event whose value bits are already in their final form
// (int64 two's complement, or float64 bits, as in a wire.Record).
func apply(ids []metric, id uint32, k wire.Kind, v uint64) wire.Status {
	e, st := lookup(ids, id, k)
	if st != wire.StatusOK {
		return st
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

// lookup finds the metric a record names, which must have the record's
// kind.
func lookup(ids []metric, id uint32, k wire.Kind) (*metric, wire.Status) {
	if uint64(id) >= uint64(len(ids)) {
		return nil, wire.StatusUnknownID
	}
	if e := &ids[id]; e.kind == k {
		return e, wire.StatusOK
	}
	return nil, wire.StatusWrongKind
}

// sumSlot accumulates the records of one counter or meter within a batch.
// w0 is the records' first word (id, kind, zero reserved bytes); it is 0
// in an empty slot, and applyBatch rejects a record whose first word is 0
// before it looks for a slot.
type sumSlot struct {
	w0  uint64
	n   int32  // records summed, for the rejection count
	sum uint64 // two's complement sum of their int64 values
}

// apply applies the slot's sum (its first word was valid when it was
// filled).
func (s *sumSlot) apply(ids []metric) wire.Status {
	return apply(ids, wire.WordID(s.w0), wire.WordKind(s.w0), s.sum)
}

// sumSlots is how many counters and meters a batch sums at once (by id
// modulo sumSlots; ids are dense, so a plugin's first metrics never
// collide).
const sumSlots = 16

// valueRun gathers consecutive timer or histogram records of one metric, so
// that a guest recording in a loop costs one UpdateMany per run.
type valueRun struct {
	w0 uint64 // 0: empty
	n  int
	v  [64]uint64 // the records' value bits
}

// applyBatch applies the records in buf, skipping and counting bad ones.
//
// Records that add to a counter or meter are summed per metric and applied
// once per batch (or when another metric needs their slot); consecutive
// records of one timer or histogram are applied with one UpdateMany. The
// batch is applied at one instant, so Add(a) then Add(b) and Add(a+b) are
// indistinguishable, and a guest recording in a loop costs one atomic add
// per counter per batch instead of one per event. Gauges are applied
// record by record, in order.
func applyBatch(ids []metric, buf []byte) (rejected int32, last wire.Status) {
	var slots [sumSlots]sumSlot
	var run valueRun
	var prev uint64 // the previous record's first word
	fail := func(n int32, st wire.Status) {
		rejected += n
		last = st
	}
	for ; len(buf) >= wire.RecordSize; buf = buf[wire.RecordSize:] {
		w0 := binary.LittleEndian.Uint64(buf[wire.RecordIDOff:])
		v := binary.LittleEndian.Uint64(buf[wire.RecordValueOff:])
		if w0 == 0 { // kind 0: invalid, and it would match an empty slot or run
			fail(1, wire.StatusBadRecord)
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
			// The second record of a run (a guest recording in a loop):
			// sum the rest of the run in registers.
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
		if run.w0 == w0 && run.n < len(run.v) {
			run.v[run.n] = v
			run.n++
			continue
		}
		r, err := wire.DecodeWords(w0, v)
		if err != nil {
			fail(1, wire.StatusBadRecord)
			continue
		}
		switch r.Kind {
		case wire.KindCounter, wire.KindMeter:
			if s.w0 != 0 {
				if st := s.apply(ids); st != wire.StatusOK {
					fail(s.n, st)
				}
			}
			*s = sumSlot{w0: w0, n: 1, sum: v}
		case wire.KindTimer, wire.KindHistogram:
			if bad, st := run.flush(ids); bad > 0 {
				fail(bad, st)
			}
			run.w0, run.n = w0, 1
			run.v[0] = v
		default:
			if st := apply(ids, r.ID, r.Kind, r.Value); st != wire.StatusOK {
				fail(1, st)
			}
		}
	}
	if bad, st := run.flush(ids); bad > 0 {
		fail(bad, st)
	}
	for i := range slots {
		if s := &slots[i]; s.w0 != 0 {
			if st := s.apply(ids); st != wire.StatusOK {
				fail(s.n, st)
			}
		}
	}
	return rejected, last
}

// flush applies the run's values (all of one valid timer or histogram
// record word) and empties it. It returns how many of them were rejected
// and why: all of them for an unknown id or a wrong kind, each negative
// duration alone otherwise.
func (run *valueRun) flush(ids []metric) (int32, wire.Status) {
	n := run.n
	if run.w0 == 0 || n == 0 {
		return 0, wire.StatusOK
	}
	// run.w0 was valid when the run began.
	id, k, vs := wire.WordID(run.w0), wire.WordKind(run.w0), run.v[:n]
	run.w0, run.n = 0, 0
	if n == 1 {
		if st := apply(ids, id, k, vs[0]); st != wire.StatusOK {
			return 1, st
		}
		return 0, wire.StatusOK
	}
	e, st := lookup(ids, id, k)
	if st != wire.StatusOK {
		return int32(n), st
	}
	if k == wire.KindHistogram {
		if e.hm != nil {
			e.hm.UpdateMany(wire.Floats(vs))
			return 0, wire.StatusOK
		}
		for _, v := range vs {
			e.h.Update(math.Float64frombits(v))
		}
		return 0, wire.StatusOK
	}
	var bad int
	if e.tm != nil {
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
		return int32(bad), wire.StatusBadValue
	}
	return 0, wire.StatusOK
}

// batch: (ptr i32, n i32) -> number of rejected records (>= 0) or negative
// status. Each record stands alone: a bad one is skipped and counted, the
// others are applied (see docs/guest-abi.md, "Batch semantics").
func (h *host) batch(ctx context.Context, mod api.Module, stack []uint64) {
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	size := uint64(n) * wire.RecordSize
	mem := guestMemory(mod)
	if mem == nil || size > math.MaxUint32 {
		h.stats.reject(wire.StatusMemory)
		ret(stack, int32(wire.StatusMemory))
		return
	}
	buf, ok := mem.Read(ptr, uint32(size))
	if !ok {
		h.stats.reject(wire.StatusMemory)
		ret(stack, int32(wire.StatusMemory))
		return
	}
	// A batch's cost grows with its length, which the guest's fuel does
	// not see (to it a call is one instruction), so the call's deadline
	// is checked here, before each batchCheck records: a loop of calls
	// over all of memory once ran 13 s past a 1 s deadline.
	ids := *h.ids.Load()
	var rejected int32
	var last wire.Status
	for done := uint32(0); ; {
		if err := ctx.Err(); err != nil {
			h.countBatch(done, rejected, last)
			panic(exitError(err)) // ends the call, as interruptCheck does
		}
		k := min(n-done, batchCheck)
		r, l := applyBatch(ids, buf[:k*wire.RecordSize])
		buf, done = buf[k*wire.RecordSize:], done+k
		if r > 0 {
			rejected, last = rejected+r, l
		}
		if done == n {
			break
		}
	}
	h.countBatch(n, rejected, last)
	ret(stack, rejected)
}

// batchCheck is how many records a batch applies between checks of the
// call's context: 1 MiB, well under a millisecond.
const batchCheck = 1 << 16

// countBatch counts a batch of which n records were applied or rejected.
func (h *host) countBatch(n uint32, rejected int32, last wire.Status) {
	h.stats.Batches.Add(1)
	h.stats.Records.Add(uint64(int64(n) - int64(rejected)))
	if rejected > 0 {
		h.stats.Rejected.Add(uint64(rejected))
		h.stats.LastStatus.Store(int32(last))
	}
}
