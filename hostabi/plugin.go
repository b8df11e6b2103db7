package hostabi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/tapes-go/tapes/hostabi/internal/interrupt"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
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
var ErrClosed = errors.New("hostabi: plugin closed")

// PluginConfig describes one plugin for NewPlugin. Wasm or Path, and
// Registry or Sink, are required; zero values elsewhere pick the defaults documented on each
// field.
type PluginConfig struct {
	// Wasm is the module's binary; if nil, it is read from Path.
	Wasm []byte
	Path string
	// Name labels the plugin in errors.
	Name string
	// Prefix puts the plugin's metrics under it (see WithPrefix); empty
	// records at the registry's root.
	Prefix string
	// Registry receives the metrics.
	Registry *registry.Registry
	// Sink, when set instead of Registry, receives them (see ClientSink).
	Sink Sink
	// MaxMetrics caps the metrics the plugin may define (see WithMaxMetrics).
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

// How a plugin's calls can be interrupted (PluginStats.Interrupt).
const (
	InterruptFuel   = "fuel"   // fuel checks added to the module (the default)
	InterruptWazero = "wazero" // wazero's WithCloseOnContextDone: the module could not be rewritten
	InterruptOff    = "off"    // PluginConfig.NoInterrupt
)

// interruptFuel is how many units of fuel (loop iterations, calls of
// functions that call, 64-byte blocks of bulk memory; see the interrupt
// package) a guest spends between calls of the check function: the check
// (an exit to Go and a context lookup, ~100 ns) then costs ~0.03 ns per
// iteration, and a guest stuck in a loop reaches Go, where the scheduler
// and the garbage collector can stop it, within microseconds.
const interruptFuel = 4096

// ErrNotRewritable is wrapped by AddInterruptChecks's error for a module
// it does not decode (an opcode beyond WebAssembly 2.0). Such a module can
// still be stopped by compiling it with wazero's
// WithCloseOnContextDone(true), which NewPlugin does for it; with the
// features NewPlugin enables (those the rewriter models), wazero then
// refuses it.
var ErrNotRewritable = interrupt.ErrUnsupported

// AddInterruptChecks returns wasm with the fuel checks NewPlugin adds to
// every plugin (docs/guest-abi.md, "Interrupting a guest"), for programs
// that run guests in a runtime of their own with Instantiate: compile the
// result in a runtime with WithCloseOnContextDone(false), the features
// the rewrite models (WithCoreFeatures(api.CoreFeaturesV2)) and a "tapes"
// host module, and a call ends, with the *sys.ExitError wazero's own
// checks return, within 4096 fuel checks (loop iterations, calls) of
// its context ending, without wazero's exit to Go at every iteration. As
// after any failed call, close that instance rather than call it again. A
// malformed module, or one that would make wazero allocate without bound,
// gets an error; one it does not decode, an error wrapping
// ErrNotRewritable.
func AddInterruptChecks(wasm []byte) ([]byte, error) {
	return interrupt.Rewrite(wasm, interrupt.Import{Module: ModuleName, Name: FuncInterruptCheck}, interruptFuel)
}

// rewriteCached is AddInterruptChecks, with the result kept in dir (when
// set) under the hash of its input: rewriting a 3 MB Go guest takes ~15
// ms, a third of a warm start, and hashing and reading it back ~3 ms.
// The file name carries the fuel and interrupt.Version, so a change to
// either never reads a stale rewrite; files are written whole and renamed
// into place, so concurrent starts never read a partial one.
func rewriteCached(wasm []byte, dir string) ([]byte, error) {
	if dir == "" {
		return AddInterruptChecks(wasm)
	}
	sum := sha256.Sum256(wasm)
	path := filepath.Join(dir, fmt.Sprintf("tapes-interrupt-v%d-%d-%x.wasm", interrupt.Version, interruptFuel, sum))
	if b, err := os.ReadFile(path); err == nil {
		return b, nil
	}
	out, err := AddInterruptChecks(wasm)
	if err != nil {
		return nil, err
	}
	os.MkdirAll(dir, 0o700)
	if f, err := os.CreateTemp(dir, ".tapes-interrupt-*"); err == nil {
		_, werr := f.Write(out)
		if cerr := f.Close(); werr == nil && cerr == nil {
			os.Rename(f.Name(), path) // a failure only costs the next start a rewrite
		}
		os.Remove(f.Name())
	}
	return out, nil
}

// exitError is what a call ended by its context returns, as wazero's own
// checks report it.
func exitError(err error) *sys.ExitError {
	if errors.Is(err, context.DeadlineExceeded) {
		return sys.NewExitError(sys.ExitCodeDeadlineExceeded)
	}
	return sys.NewExitError(sys.ExitCodeContextCanceled)
}

// PluginStats counts what happened to a plugin. All counters are cumulative.
type PluginStats struct {
	// Interrupt says how calls are stopped: InterruptFuel,
	// InterruptWazero or InterruptOff.
	Interrupt string

	Calls     uint64 // calls started (Call, Collect, RunStart)
	Errors    uint64 // calls that returned an error, of any cause
	Traps     uint64 // calls ended by a trap or a non-zero exit of the guest
	Timeouts  uint64 // calls ended by CallTimeout or the caller's context
	Replaced  uint64 // instances closed because a call failed
	Instances int    // instances alive now

	// Compile is how long NewPlugin took to add the fuel checks and compile
	// the module (or load it from the compilation cache); InstanceStart is how long the most
	// recent instance took to instantiate and run _initialize.
	Compile, InstanceStart time.Duration

	Defines    uint64      // successful define calls
	Records    uint64      // events applied
	Rejected   uint64      // host calls and batch records refused with a status
	LastStatus wire.Status // the most recent refusal
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
	abi       Stats

	sem chan struct{} // one token per instance that may be busy

	mu     sync.Mutex
	idle   []*instance
	live   int
	closed bool

	calls, errs, traps, timeouts, replaced atomic.Uint64
	compile, instStart                     atomic.Int64
}

type instance struct {
	mod   api.Module
	fns   map[string]api.Function
	flush api.Function
}

// NewPlugin compiles cfg's module and, for a reactor (a module exporting
// _initialize, as Go c-shared and clang -mexec-model=reactor builds do),
// starts its first instance so a broken plugin fails here rather than on the
// first call. A command module (exporting only _start) is run with RunStart.
func NewPlugin(ctx context.Context, cfg PluginConfig) (p *Plugin, err error) {
	sink := cfg.Sink
	switch {
	case sink != nil && cfg.Registry != nil:
		return nil, fmt.Errorf("hostabi: plugin %q: both Registry and Sink set", cfg.Name)
	case cfg.Registry != nil:
		sink = RegistrySink(cfg.Registry)
	case sink == nil:
		return nil, fmt.Errorf("hostabi: plugin %q: neither Registry nor Sink set", cfg.Name)
	}
	wasm := cfg.Wasm
	if wasm == nil {
		if cfg.Path == "" {
			return nil, fmt.Errorf("hostabi: plugin %q: neither Wasm nor Path set", cfg.Name)
		}
		if wasm, err = os.ReadFile(cfg.Path); err != nil {
			return nil, fmt.Errorf("hostabi: plugin %q: %w", cfg.Name, err)
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
		return nil, fmt.Errorf("hostabi: plugin %q: %w", cfg.Name, err)
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
	h, err := newHost(sink, WithPrefix(cfg.Prefix), WithMaxMetrics(cfg.MaxMetrics), WithStats(&p.abi))
	if err != nil {
		return fail(err)
	}
	if _, err = h.builder(p.rt).Instantiate(ctx); err != nil {
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

func (p *Plugin) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.timeout > 0 {
		return context.WithTimeout(ctx, p.timeout)
	}
	return ctx, func() {}
}

func (p *Plugin) newInstance(ctx context.Context) (*instance, error) {
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	start := time.Now()
	mod, err := p.rt.InstantiateModule(cctx, p.code, p.modCfg.WithStartFunctions("_initialize"))
	if err != nil {
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	p.instStart.Store(int64(time.Since(start)))
	inst := &instance{mod: mod, fns: map[string]api.Function{}}
	if p.autoFlush {
		inst.flush = mod.ExportedFunction(FlushExport)
	}
	p.mu.Lock()
	p.live++
	p.mu.Unlock()
	return inst, nil
}

// acquire takes an idle instance or starts one, waiting while the pool is
// busy. A context that ends first gives the exit error a call stopped by
// it returns.
func (p *Plugin) acquire(ctx context.Context) (*instance, error) {
	// A call that is already over takes no instance: the select below may
	// still pick the free semaphore, and then start an instance for nothing.
	if err := ctx.Err(); err != nil {
		return nil, exitError(err)
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, exitError(ctx.Err())
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.sem
		return nil, ErrClosed
	}
	if n := len(p.idle); n > 0 {
		inst := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return inst, nil
	}
	p.mu.Unlock()
	inst, err := p.newInstance(ctx)
	if err != nil {
		<-p.sem
		return nil, err
	}
	return inst, nil
}

// release returns inst to the pool, or closes it when its call failed: a
// trapped or interrupted instance may hold a corrupt runtime (a Go guest's
// scheduler, a half-written buffer) and must never run again.
func (p *Plugin) release(ctx context.Context, inst *instance, failed bool) {
	p.mu.Lock()
	if failed || p.closed {
		p.live--
		p.mu.Unlock()
		if failed {
			p.replaced.Add(1)
		}
		inst.mod.Close(context.WithoutCancel(ctx))
	} else {
		p.idle = append(p.idle, inst)
		p.mu.Unlock()
	}
	<-p.sem
}

// failed counts a failed call of export and returns its error.
func (p *Plugin) failed(export string, err error) error {
	p.classify(err)
	return fmt.Errorf("hostabi: plugin %q: %s: %w", p.name, export, err)
}

// classify counts a failed call's cause. A closed plugin is an error but
// neither a trap nor a timeout: the guest did nothing.
func (p *Plugin) classify(err error) {
	p.errs.Add(1)
	if errors.Is(err, ErrClosed) {
		return
	}
	var ee *sys.ExitError
	if errors.As(err, &ee) {
		switch ee.ExitCode() {
		case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
			p.timeouts.Add(1)
			return
		}
	}
	p.traps.Add(1)
}

// Call calls the guest's exported function with params (encoded as wazero's
// api.Encode* functions do) on a free instance, then lets the guest flush
// its buffered events (FlushExport). It waits for a free instance while the
// pool is busy. On any failure the instance is closed and replaced, and the
// error says why; a *sys.ExitError with sys.ExitCodeDeadlineExceeded means
// CallTimeout expired.
func (p *Plugin) Call(ctx context.Context, export string, params ...uint64) ([]uint64, error) {
	def, ok := p.exports[export]
	if export == "_initialize" || export == "_start" {
		ok = false // run by the runner itself, once per instance
	}
	if !ok {
		return nil, fmt.Errorf("hostabi: plugin %q exports no function %q", p.name, export)
	}
	if len(params) != len(def.ParamTypes()) {
		return nil, fmt.Errorf("hostabi: plugin %q: %s takes %d parameters, got %d", p.name, export, len(def.ParamTypes()), len(params))
	}
	if !p.reactor {
		return nil, fmt.Errorf("hostabi: plugin %q is a command module (exports _start, not _initialize); use RunStart", p.name)
	}
	p.calls.Add(1)
	inst, err := p.acquire(ctx)
	if err != nil {
		return nil, p.failed(export, err)
	}
	fn := inst.fns[export]
	if fn == nil {
		fn = inst.mod.ExportedFunction(export)
		inst.fns[export] = fn
	}
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	if err := cctx.Err(); err != nil {
		// Fuel checks run only in loops: do not start a call whose
		// context ended as acquire returned.
		p.release(ctx, inst, false)
		return nil, p.failed(export, exitError(err))
	}
	res, err := fn.Call(cctx, params...)
	if err == nil && inst.flush != nil && export != FlushExport {
		_, err = inst.flush.Call(cctx)
	}
	if err != nil {
		p.release(ctx, inst, true)
		return nil, p.failed(export, err)
	}
	var out []uint64
	if len(res) > 0 {
		out = append(out, res...) // res is reused by the instance's next call
	}
	p.release(ctx, inst, false)
	return out, nil
}

// Collect calls CollectExport if the plugin exports it, and does nothing
// otherwise. Hosts call it on their reporting interval.
func (p *Plugin) Collect(ctx context.Context) error {
	if !p.HasExport(CollectExport) {
		return nil
	}
	_, err := p.Call(ctx, CollectExport)
	return err
}

// RunStart runs a command module (a wasip1 program with _start) once, in a
// fresh instance that is closed afterwards. An exit with code 0 is success.
// Only ctx bounds it, not CallTimeout: a command may run as long as its
// caller allows. Events the guest buffered and did not flush before exiting
// are lost, so command guests flush before returning from main.
func (p *Plugin) RunStart(ctx context.Context) error {
	if !p.HasExport("_start") {
		return fmt.Errorf("hostabi: plugin %q exports no _start", p.name)
	}
	p.calls.Add(1)
	mod, err := p.rt.InstantiateModule(ctx, p.code, p.modCfg.WithStartFunctions("_start"))
	if mod != nil {
		mod.Close(context.WithoutCancel(ctx))
	}
	if err != nil {
		return p.failed("_start", err)
	}
	return nil
}

// Errors returns the number of calls that failed.
func (p *Plugin) Errors() uint64 { return p.errs.Load() }

// Stats returns the plugin's counters.
func (p *Plugin) Stats() PluginStats {
	p.mu.Lock()
	live := p.live
	p.mu.Unlock()
	return PluginStats{
		Interrupt:     p.interrupt,
		Calls:         p.calls.Load(),
		Errors:        p.errs.Load(),
		Traps:         p.traps.Load(),
		Timeouts:      p.timeouts.Load(),
		Replaced:      p.replaced.Load(),
		Instances:     live,
		Compile:       time.Duration(p.compile.Load()),
		InstanceStart: time.Duration(p.instStart.Load()),
		Defines:       p.abi.Defines.Load(),
		Records:       p.abi.Records.Load(),
		Rejected:      p.abi.Rejected.Load(),
		LastStatus:    wire.Status(p.abi.LastStatus.Load()),
	}
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
