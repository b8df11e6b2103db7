// Package plugin runs WebAssembly plugins safely: each module is compiled
// once (rewritten first so a deadline can stop it, and cached on disk when
// asked), served by a pool of instances of which each serves one call at a
// time, with a memory limit and a deadline per call, and every instance
// whose call failed replaced by a fresh one. The guests record through the
// "tapes" host module of package hostabi.
package plugin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/tapes-go/tapes/hostabi"
	"github.com/tapes-go/tapes/hostabi/internal/interrupt"
	"github.com/tapes-go/tapes/registry"
)

// Exports with a meaning to the plugin runner.
const (
	// FlushExport, when a guest exports it (the Go SDK and tapes.h with
	// TAPES_IMPLEMENTATION do), is called after every successful Call so
	// events buffered in the guest reach the registry with the call that
	// made them. It takes no parameters; a result is ignored.
	FlushExport = "tapes_flush"
	// CollectExport is the convention for plugins that gather metrics on
	// their own schedule: a host such as tapes-host calls it on an interval
	// (see Collect). It takes no parameters; a result is ignored.
	CollectExport = "tapes_collect"
)

// ErrClosed is returned by calls on a closed Plugin.
var ErrClosed = errors.New("plugin: closed")

// Config describes one plugin for New. Wasm or Path, and
// Registry or Sink, are required; zero values elsewhere pick the defaults documented on each
// field.
type Config struct {
	// Wasm is the module's binary; if nil, it is read from Path.
	Wasm []byte
	Path string
	// Name labels the plugin in errors.
	Name string
	// Prefix puts the plugin's metrics under it (see hostabi.Config);
	// empty records at the registry's root.
	Prefix string
	// Registry receives the metrics.
	Registry *registry.Registry
	// Sink, when set instead of Registry, receives them (see ClientSink).
	Sink hostabi.Sink
	// MaxMetrics caps the metrics the plugin may define (see
	// hostabi.Config).
	MaxMetrics int

	// CacheDir, when set, keeps compiled code on disk there
	// (wazero.NewCompilationCacheWithDir), and the module with its fuel
	// checks added, so the next start skips both.
	// Cache, when set instead, is a cache shared with other runtimes.
	CacheDir string
	Cache    wazero.CompilationCache

	// MemoryLimitPages caps each instance's memory in 64 KiB pages; growing
	// past it fails inside the guest (memory.grow returns -1). 0 means
	// 1024 pages (64 MiB). Go guests need at least ~64.
	MemoryLimitPages uint32
	// CallTimeout bounds every call into the guest, including instantiation
	// (_initialize) and the flush after a call. A guest still running when
	// it expires is stopped and its instance replaced. 0 means no deadline
	// beyond the caller's context.
	CallTimeout time.Duration
	// PoolSize is how many instances may serve calls at once; each serves
	// one call at a time. 0 means 1. Instances are created on demand.
	PoolSize int
	// NoAutoFlush stops Call from calling FlushExport after each call.
	NoAutoFlush bool
	// NoInterrupt runs the guest without the checks that let a deadline or
	// a cancelled context stop it. By default the runner rewrites the
	// module so that every loop iteration counts down a fuel global and calls
	// the host when it runs out (every 4096 iterations), where the call's
	// context is checked; see docs/guest-abi.md, "Interrupting a guest".
	// That costs a load, a store and a branch per loop iteration (in Go's
	// jump-table functions, per backward jump and per call). A module the
	// rewriter cannot decode falls back to wazero's WithCloseOnContextDone,
	// which leaves native code at every iteration. Only for guests trusted to return: a guest stuck in a
	// loop then blocks its caller forever and, at the next garbage
	// collection, the whole process. CallTimeout must be 0.
	NoInterrupt bool

	// Stdout and Stderr receive the guest's output; nil discards it.
	Stdout, Stderr io.Writer
}

// Stats counts what happened to a plugin: its calls, and (the embedded
// hostabi.Stats) what its guests did through the host module. All counts
// are cumulative.
type Stats struct {
	hostabi.Stats

	// Interrupt says how calls are stopped: InterruptFuel,
	// InterruptWazero or InterruptOff.
	Interrupt string

	Calls     uint64 // calls started (Call, Collect, RunStart)
	Errors    uint64 // calls that returned an error, of any cause
	Traps     uint64 // calls ended by a trap or a non-zero exit of the guest
	Timeouts  uint64 // calls ended by CallTimeout or the caller's context
	Replaced  uint64 // instances closed because a call failed
	Instances int    // instances alive now

	// Compile is how long New took to add the fuel checks and compile
	// the module (or load it from the compilation cache); InstanceStart is how long the most
	// recent instance took to instantiate and run _initialize.
	Compile, InstanceStart time.Duration
}

// Plugin runs one WebAssembly module: compiled once, with a pool of
// instances that each serve one call at a time, and every instance whose
// call failed (trap, exit, deadline) closed and replaced, never reused.
// Methods are safe for concurrent use.
type Plugin struct {
	name      string
	rt        wazero.Runtime
	cache     wazero.CompilationCache // closed by Close when we made it
	code      wazero.CompiledModule
	modCfg    wazero.ModuleConfig
	exports   map[string]api.FunctionDefinition
	reactor   bool
	interrupt string
	timeout   time.Duration
	autoFlush bool
	abi       *hostabi.Module

	sem chan struct{} // one token per instance that may be busy

	mu     sync.Mutex
	idle   []*instance
	live   int
	closed bool

	calls, errs, traps, timeouts, replaced atomic.Uint64
	compile, instStart                     atomic.Int64
}

// New compiles cfg's module and, for a reactor (a module exporting
// _initialize, as Go c-shared and clang -mexec-model=reactor builds do),
// starts its first instance so a broken plugin fails here rather than on the
// first call. A command module (exporting only _start) is run with RunStart.
func New(ctx context.Context, cfg Config) (p *Plugin, err error) {
	sink := cfg.Sink
	switch {
	case sink != nil && cfg.Registry != nil:
		return nil, fmt.Errorf("plugin %q: both Registry and Sink set", cfg.Name)
	case cfg.Registry != nil:
		sink = hostabi.RegistrySink(cfg.Registry)
	case sink == nil:
		return nil, fmt.Errorf("plugin %q: neither Registry nor Sink set", cfg.Name)
	}
	wasm := cfg.Wasm
	if wasm == nil {
		if cfg.Path == "" {
			return nil, fmt.Errorf("plugin %q: neither Wasm nor Path set", cfg.Name)
		}
		if wasm, err = os.ReadFile(cfg.Path); err != nil {
			return nil, fmt.Errorf("plugin %q: %w", cfg.Name, err)
		}
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Path
	}
	pages := cfg.MemoryLimitPages
	if pages == 0 {
		pages = 1024
	}
	pool := cfg.PoolSize
	if pool <= 0 {
		pool = 1
	}
	p = &Plugin{
		name:      cfg.Name,
		timeout:   cfg.CallTimeout,
		autoFlush: !cfg.NoAutoFlush,
		sem:       make(chan struct{}, pool),
		exports:   map[string]api.FunctionDefinition{},
	}
	fail := func(err error) (*Plugin, error) {
		p.Close(ctx)
		return nil, fmt.Errorf("plugin %q: %w", cfg.Name, err)
	}

	if pages > 65536 { // wazero panics above 4 GiB
		return fail(fmt.Errorf("MemoryLimitPages %d: at most 65536 (4 GiB)", pages))
	}
	if cfg.NoInterrupt && cfg.CallTimeout > 0 {
		return fail(errors.New("CallTimeout needs interrupts; NoInterrupt is set"))
	}
	// Interrupts come from fuel checks the runner adds to the module (see
	// internal/interrupt); wazero's own checks, which leave native code at
	// every loop iteration, only for a module the rewriter cannot decode.
	p.interrupt = InterruptOff
	rewrite := time.Now()
	if !cfg.NoInterrupt {
		p.interrupt = InterruptFuel
		switch w, err := rewriteCached(wasm, cfg.CacheDir); {
		case err == nil:
			wasm = w
		case errors.Is(err, ErrNotRewritable):
			p.interrupt = InterruptWazero
		default:
			return fail(err)
		}
	}
	rewriteTook := time.Since(rewrite)
	rc := wazero.NewRuntimeConfig().
		WithCoreFeatures(interrupt.CoreFeatures). // what the rewriter models, and no more
		WithMemoryLimitPages(pages).
		WithCloseOnContextDone(p.interrupt == InterruptWazero)
	switch {
	case cfg.Cache != nil:
		rc = rc.WithCompilationCache(cfg.Cache)
	case cfg.CacheDir != "":
		if p.cache, err = wazero.NewCompilationCacheWithDir(cfg.CacheDir); err != nil {
			return fail(err)
		}
		rc = rc.WithCompilationCache(p.cache)
	}
	p.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err = wasi_snapshot_preview1.Instantiate(ctx, p.rt); err != nil {
		return fail(err)
	}
	if p.abi, err = hostabi.Instantiate(ctx, p.rt, sink, hostabi.Config{Prefix: cfg.Prefix, MaxMetrics: cfg.MaxMetrics}); err != nil {
		return fail(err)
	}
	start := time.Now()
	if p.code, err = p.rt.CompileModule(ctx, wasm); err != nil {
		return fail(err)
	}
	p.compile.Store(int64(time.Since(start) + rewriteTook))
	for name, def := range p.code.ExportedFunctions() {
		p.exports[name] = def
	}
	// A module with neither _initialize nor _start needs no start function
	// and is served like a reactor.
	_, hasInit := p.exports["_initialize"]
	_, hasStart := p.exports["_start"]
	p.reactor = hasInit || !hasStart

	stdout, stderr := cfg.Stdout, cfg.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	// Real clocks and randomness: guests time things (the SDK's Timer.Time)
	// and wazero's defaults are deterministic fakes.
	p.modCfg = wazero.NewModuleConfig().
		WithName(""). // anonymous, so a pool can hold many instances
		WithStdout(stdout).WithStderr(stderr).
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithRandSource(rand.Reader)

	if p.reactor {
		inst, err := p.newInstance(ctx)
		if err != nil {
			return fail(err)
		}
		p.mu.Lock()
		p.idle = append(p.idle, inst)
		p.mu.Unlock()
	}
	return p, nil
}

// Name returns the plugin's name.
func (p *Plugin) Name() string { return p.name }

// HasExport reports whether the module exports a function called name.
func (p *Plugin) HasExport(name string) bool {
	_, ok := p.exports[name]
	return ok
}

// Close closes every instance and the runtime. Calls in flight fail.
func (p *Plugin) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.live -= len(idle)
	p.mu.Unlock()
	var err error
	if p.rt != nil {
		err = p.rt.Close(ctx) // closes the instances and compiled code too
	}
	if p.cache != nil {
		if e := p.cache.Close(ctx); err == nil {
			err = e
		}
	}
	return err
}
