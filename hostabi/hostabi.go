// Package hostabi is the "tapes" host module for wazero: the functions a
// WebAssembly guest calls to define metrics and record events into a Sink
// (a registry, or a shm worker slot), none of which lets a guest harm its
// host. Instantiate adds it to a wazero.Runtime, as the packages under
// wazero's imports/ directory do.
//
// Running a plugin safely (a pool of instances, deadlines, memory limits,
// replacing instances whose call failed) is the job of package
// hostabi/plugin, which uses this one.
//
// The ABI, byte for byte, with its status codes (wire.Status) and the
// reasons behind it, is in docs/guest-abi.md. Guests use the Go SDK
// (guest/tapesguest) or the C header (guest/c/tapes.h).
package hostabi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/tapes-go/tapes/hostabi/internal/interrupt"
	"github.com/tapes-go/tapes/internal/apply"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// ModuleName is the import module name of the host functions.
const ModuleName = "tapes"

// Names of the host functions (see docs/guest-abi.md for their
// signatures); the module also exports interrupt.CheckName, which only
// the fuel checks the plugin runner adds to a guest call.
const (
	funcDefine          = "define"
	funcCounterAdd      = "counter_add"
	funcMeterMark       = "meter_mark"
	funcTimerNs         = "timer_ns"
	funcHistogramUpdate = "histogram_update"
	funcGaugeSet        = "gauge_set"
	funcBatch           = "batch"
)

// defaultMaxMetrics is Config.MaxMetrics's default.
const defaultMaxMetrics = 4096

// Config configures Instantiate. The zero value records at the sink's root
// with the default cap.
type Config struct {
	// Prefix puts every metric the guests define under it: the guest's
	// "requests" becomes "plugins.auth.requests" with Prefix
	// "plugins.auth". It must itself be a valid name; Instantiate fails
	// otherwise.
	Prefix string
	// MaxMetrics caps how many distinct metrics the guests of this module
	// may define; define returns wire.StatusTooManyMetrics beyond it. 0 or
	// less means 4096.
	MaxMetrics int
}

// Stats counts what guests did through a host module, so the embedding
// program can report failures a guest may ignore. All counts are
// cumulative.
type Stats struct {
	Defines  uint64 // successful define calls
	Records  uint64 // events applied (single calls and batch records)
	Batches  uint64 // batch calls that were in bounds
	Rejected uint64 // calls and batch records that failed with a status
	// LastStatus is the most recent failure status (negative; 0 if none).
	LastStatus wire.Status
}

// counters is Stats as the host functions update it.
type counters struct {
	defines, records, batches, rejected atomic.Uint64
	last                                atomic.Int32
}

func (c *counters) reject(st wire.Status) {
	c.rejected.Add(1)
	c.last.Store(int32(st))
}

// Module is an instantiated host module.
type Module struct {
	mod api.Module
	h   *host
}

// Stats returns what the module's guests have done so far.
func (m *Module) Stats() Stats {
	c := &m.h.stats
	return Stats{
		Defines: c.defines.Load(), Records: c.records.Load(), Batches: c.batches.Load(),
		Rejected: c.rejected.Load(), LastStatus: wire.Status(c.last.Load()),
	}
}

// Close removes the module from its runtime (closing the runtime does too).
func (m *Module) Close(ctx context.Context) error { return m.mod.Close(ctx) }

// host is the state of one instantiated host module (see Instantiate on
// ids).
type host struct {
	sink   Sink
	prefix string
	max    int
	stats  counters

	ids atomic.Pointer[apply.Table] // append-only, published by Store

	mu     sync.Mutex // serialises define
	byName map[string]int32
}

// Instantiate adds the "tapes" host module to rt, recording into sink
// (RegistrySink(r) for a registry in this process). Guests instantiated
// into rt afterwards can import its functions. A runtime holds at most one
// module named "tapes", so each plugin that needs its own prefix needs its
// own runtime (share a wazero.CompilationCache between them).
//
// Ids are per module (one per plugin), not per guest instance: every
// instance that defines "hits" gets the same id, so ids stay valid across
// the instances of a pool and across replacements, and the cap bounds the
// plugin as a whole however many instances it runs.
func Instantiate(ctx context.Context, rt wazero.Runtime, sink Sink, cfg Config) (*Module, error) {
	if sink == nil {
		return nil, errors.New("hostabi: nil sink")
	}
	if cfg.MaxMetrics <= 0 {
		cfg.MaxMetrics = defaultMaxMetrics
	}
	if cfg.Prefix != "" {
		if err := wire.ValidateName(cfg.Prefix); err != nil {
			return nil, fmt.Errorf("hostabi: prefix: %w", err)
		}
	}
	h := &host{sink: sink, prefix: cfg.Prefix, max: cfg.MaxMetrics, byName: map[string]int32{}}
	h.ids.Store(&apply.Table{})
	mod, err := h.builder(rt).Instantiate(ctx)
	if err != nil {
		return nil, fmt.Errorf("hostabi: %w", err)
	}
	return &Module{mod, h}, nil
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
		Export(funcDefine)
	rec := func(name string, fn api.GoFunc, vt api.ValueType) {
		b.NewFunctionBuilder().
			WithGoFunction(fn, []api.ValueType{i32, vt}, []api.ValueType{i32}).
			WithParameterNames("id", "value").WithResultNames("status").
			Export(name)
	}
	rec(funcCounterAdd, api.GoFunc(func(_ context.Context, s []uint64) { h.one(s, wire.KindCounter) }), i64)
	rec(funcMeterMark, api.GoFunc(func(_ context.Context, s []uint64) { h.one(s, wire.KindMeter) }), i64)
	rec(funcTimerNs, api.GoFunc(func(_ context.Context, s []uint64) { h.one(s, wire.KindTimer) }), i64)
	rec(funcHistogramUpdate, api.GoFunc(func(_ context.Context, s []uint64) { h.one(s, wire.KindHistogram) }), f64)
	rec(funcGaugeSet, api.GoFunc(func(_ context.Context, s []uint64) { h.one(s, wire.KindGauge) }), f64)
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(h.batch), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("ptr", "n").WithResultNames("rejected_or_status").
		Export(funcBatch)
	b.NewFunctionBuilder().
		WithGoFunction(api.GoFunc(interrupt.Check), nil, []api.ValueType{i32}).
		WithResultNames("fuel").
		Export(interrupt.CheckName)
	return b
}

func ret(stack []uint64, v int32) { stack[0] = api.EncodeI32(v) }

// define: (kind i32, name_ptr i32, name_len i32) -> id or negative status.
func (h *host) define(_ context.Context, mod api.Module, stack []uint64) {
	kind, ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1]), api.DecodeU32(stack[2])
	id, st := h.defineName(mod, kind, ptr, n)
	if st != wire.StatusOK {
		h.stats.reject(st)
		ret(stack, int32(st))
		return
	}
	h.stats.defines.Add(1)
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
		if (*h.ids.Load())[id].Kind() != k {
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
	e, ok := apply.NewEntry(k, m)
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
	st := h.ids.Load().One(api.DecodeU32(stack[0]), k, stack[1])
	if st != wire.StatusOK {
		h.stats.reject(st)
	} else {
		h.stats.records.Add(1)
	}
	ret(stack, int32(st))
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
	// is checked here, before each batchCheck records (docs/RATIONALE.md,
	// "WebAssembly host").
	ids := *h.ids.Load()
	b := batches.Get().(*apply.Batch) // empty: Flush empties it
	defer batches.Put(b)
	var rejected int32
	var last wire.Status
	for done := uint32(0); ; {
		if err := ctx.Err(); err != nil {
			h.countBatch(done, rejected, last)
			panic(interrupt.ExitError(err)) // ends the call, as interrupt.Check does
		}
		k := min(n-done, batchCheck)
		b.Apply(ids, buf[:k*wire.RecordSize])
		r, l := b.Flush(ids)
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

// batches holds the Batch each batch call gathers its records in: the
// records' values escape into the metrics' UpdateMany, so a Batch on the
// call's stack would be a heap allocation per call.
var batches = sync.Pool{New: func() any { return new(apply.Batch) }}

// batchCheck is how many records a batch applies between checks of the
// call's context: 1 MiB, well under a millisecond.
const batchCheck = 1 << 16

// countBatch counts a batch of which n records were applied or rejected.
func (h *host) countBatch(n uint32, rejected int32, last wire.Status) {
	h.stats.batches.Add(1)
	h.stats.records.Add(uint64(int64(n) - int64(rejected)))
	if rejected > 0 {
		h.stats.rejected.Add(uint64(rejected))
		h.stats.last.Store(int32(last))
	}
}
