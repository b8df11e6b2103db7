package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/tapes-go/tapes/hostabi/internal/interrupt"
)

type instance struct {
	mod   api.Module
	fns   map[string]api.Function
	flush api.Function
}

// Stats returns the plugin's counters.
func (p *Plugin) Stats() Stats {
	p.mu.Lock()
	live := p.live
	p.mu.Unlock()
	return Stats{
		Stats:         p.abi.Stats(),
		Interrupt:     p.interrupt,
		Calls:         p.calls.Load(),
		Errors:        p.errs.Load(),
		Traps:         p.traps.Load(),
		Timeouts:      p.timeouts.Load(),
		Replaced:      p.replaced.Load(),
		Instances:     live,
		Compile:       time.Duration(p.compile.Load()),
		InstanceStart: time.Duration(p.instStart.Load()),
	}
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
		return nil, interrupt.ExitError(err)
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, interrupt.ExitError(ctx.Err())
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
	return fmt.Errorf("plugin %q: %s: %w", p.name, export, err)
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
		return nil, fmt.Errorf("plugin %q exports no function %q", p.name, export)
	}
	if len(params) != len(def.ParamTypes()) {
		return nil, fmt.Errorf("plugin %q: %s takes %d parameters, got %d", p.name, export, len(def.ParamTypes()), len(params))
	}
	if !p.reactor {
		return nil, fmt.Errorf("plugin %q is a command module (exports _start, not _initialize); use RunStart", p.name)
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
		return nil, p.failed(export, interrupt.ExitError(err))
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
		return fmt.Errorf("plugin %q exports no _start", p.name)
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
