package plugin_test

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/tapes-go/tapes/hostabi/plugin"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

func newPlugin(t *testing.T, cfg plugin.Config) *plugin.Plugin {
	t.Helper()
	ctx := context.Background()
	if cfg.Cache == nil {
		cfg.Cache = testCache
	}
	p, err := plugin.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(ctx) })
	return p
}

func callP(t *testing.T, p *plugin.Plugin, name string, params ...uint64) int32 {
	t.Helper()
	res, err := p.Call(context.Background(), name, params...)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) == 0 {
		return 0
	}
	return api.DecodeI32(res[0])
}

// Several instances of one plugin, called from several goroutines at once,
// add up exactly, and the runner flushes each call's buffered events.
func TestPluginPoolAddsUp(t *testing.T) {
	r := registry.New()
	p := newPlugin(t, plugin.Config{
		Name: "cg", Wasm: cGuest(t, "cguest"), Registry: r, Prefix: "plugins.cg", PoolSize: 4,
	})
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				res, err := p.Call(context.Background(), "record_all")
				if err != nil || api.DecodeI32(res[0]) != 0 {
					errs <- errors.Join(err, errors.New("record_all failed"))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkEveryKind(t, r, "plugins.cg.c.", workers*each)
	st := p.Stats()
	if st.Instances < 1 || st.Instances > 4 {
		t.Errorf("%d instances alive, pool size is 4", st.Instances)
	}
	if st.Calls != workers*each || st.Errors != 0 || st.Replaced != 0 || st.Rejected != 0 {
		t.Errorf("stats %+v", st)
	}
	// Every instance defined the five names, and all got the same ids.
	if st.Defines != uint64(5*st.Instances) {
		t.Errorf("%d defines for %d instances, want 5 each", st.Defines, st.Instances)
	}
}

func TestPluginCallErrors(t *testing.T) {
	p := newPlugin(t, plugin.Config{Name: "cg", Wasm: cGuest(t, "cguest"), Registry: registry.New()})
	ctx := context.Background()
	if _, err := p.Call(ctx, "no_such_export"); err == nil {
		t.Error("calling a missing export succeeded")
	}
	if _, err := p.Call(ctx, "_initialize"); err == nil {
		t.Error("calling _initialize again succeeded")
	}
	if _, err := p.Call(ctx, "events", 1, 2); err == nil {
		t.Error("calling with the wrong number of parameters succeeded")
	}
	if !p.HasExport("record_all") || p.HasExport("nope") || !p.HasExport(plugin.FlushExport) {
		t.Error("HasExport is wrong")
	}
	if st := p.Stats(); st.Replaced != 0 || st.Instances != 1 {
		t.Errorf("argument errors touched the pool: %+v", st)
	}
	if err := p.Collect(ctx); err != nil { // cguest exports no tapes_collect
		t.Error(err)
	}
	p.Close(ctx)
	before := p.Stats()
	if _, err := p.Call(ctx, "record_all"); !errors.Is(err, plugin.ErrClosed) {
		t.Errorf("call after Close: %v", err)
	}
	if st := p.Stats(); st.Errors != before.Errors+1 || st.Traps != before.Traps || st.Timeouts != before.Timeouts {
		t.Errorf("a call after Close counted as %+v, was %+v; want one error, no trap or timeout", st, before)
	}
}

func TestNewErrors(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]plugin.Config{
		"no registry": {Wasm: cGuest(t, "cguest")},
		"no wasm":     {Registry: registry.New()},
		"bad path":    {Path: "/nonexistent.wasm", Registry: registry.New()},
		"not wasm":    {Wasm: []byte("hello"), Registry: registry.New()},
		"bad prefix":  {Wasm: cGuest(t, "cguest"), Registry: registry.New(), Prefix: "a..b"},
		"huge memory": {Wasm: cGuest(t, "cguest"), Registry: registry.New(), MemoryLimitPages: 65537},
	} {
		if p, err := plugin.New(ctx, cfg); err == nil {
			p.Close(ctx)
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// A command module runs once through RunStart; exit code 0 is success.
func TestPluginRunStart(t *testing.T) {
	r := registry.New()
	p := newPlugin(t, plugin.Config{Name: "cmd", Wasm: cCommand(t, "ccmd"), Registry: r, Prefix: "plugins.cmd"})
	if _, err := p.Call(context.Background(), "_start"); err == nil {
		t.Error("Call on a command module succeeded")
	}
	for i := 0; i < 2; i++ {
		if err := p.RunStart(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	m, ok := r.Get("plugins.cmd.runs")
	if !ok || m.(*registry.Counter).Value() != 2 {
		t.Fatalf("plugins.cmd.runs = %v, want a counter at 2", m)
	}
	if st := p.Stats(); st.Errors != 0 || st.Calls != 2 {
		t.Errorf("stats %+v", st)
	}
	fail := newPlugin(t, plugin.Config{Name: "cmdfail", Wasm: cCommand(t, "ccmd"), Registry: registry.New(),
		Prefix: "plugins.cmd", MaxMetrics: 1})
	err := fail.RunStart(context.Background())
	var ee *sys.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("RunStart of a command exiting 3 = %v", err)
	}
	if st := fail.Stats(); st.Errors != 1 || st.Rejected != 1 || st.LastStatus != wire.StatusTooManyMetrics {
		t.Errorf("stats %+v", st)
	}
}

// timeoutPlugin is the hostile guest with a short deadline.
func hostilePlugin(t *testing.T, r *registry.Registry, cfg plugin.Config) *plugin.Plugin {
	cfg.Name = "hostile"
	cfg.Wasm = cGuest(t, "hostile")
	cfg.Registry = r
	cfg.Prefix = "plugins.hostile"
	return newPlugin(t, cfg)
}

func isDeadline(err error) bool {
	var ee *sys.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == sys.ExitCodeDeadlineExceeded
}

// An infinite loop is stopped by the deadline, its instance replaced, and
// another plugin keeps serving calls while it spins.
func TestHostileInfiniteLoop(t *testing.T) {
	bad := hostilePlugin(t, registry.New(), plugin.Config{CallTimeout: time.Second})
	if m := bad.Stats().Interrupt; m != plugin.InterruptFuel {
		t.Fatalf("interrupt mode %q, want %q", m, plugin.InterruptFuel)
	}
	r := registry.New()
	good := newPlugin(t, plugin.Config{Name: "cg", Wasm: cGuest(t, "cguest"), Registry: r, Prefix: "plugins.cg"})

	done := make(chan error, 1)
	go func() {
		_, err := bad.Call(context.Background(), "spin")
		done <- err
	}()
	calls := 0
	for {
		select {
		case err := <-done:
			if !isDeadline(err) {
				t.Fatalf("spin returned %v, want a deadline exit", err)
			}
			if calls == 0 {
				t.Fatal("the good plugin served no call while the bad one spun")
			}
			checkEveryKind(t, r, "plugins.cg.c.", calls)
			st := bad.Stats()
			if st.Timeouts != 1 || st.Replaced != 1 || st.Errors != 1 || st.Traps != 0 || st.Instances != 0 {
				t.Errorf("stats after the timeout: %+v", st)
			}
			// The next call gets a fresh instance.
			if n := callP(t, bad, "define_many", 1); n != 1 {
				t.Errorf("define_many(1) after the timeout = %d", n)
			}
			if st := bad.Stats(); st.Instances != 1 {
				t.Errorf("%d instances after recovery, want 1", st.Instances)
			}
			return
		default:
			if s := callP(t, good, "record_all"); s != 0 {
				t.Fatalf("record_all = %d", s)
			}
			calls++
			if calls%1000 == 0 {
				// A collection stops the world: it returns only if the
				// spinning guest reaches Go (its fuel checks) meanwhile.
				runtime.GC()
			}
		}
	}
}

// A caller's own deadline also ends a spinning guest.
func TestHostileCallerDeadline(t *testing.T) {
	bad := hostilePlugin(t, registry.New(), plugin.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := bad.Call(ctx, "spin")
	if !isDeadline(err) {
		t.Fatalf("spin returned %v", err)
	}
	if st := bad.Stats(); st.Timeouts != 1 || st.Replaced != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A call whose context is already done fails as a timeout, the same way
// every time, without taking an instance or starting one (instantiating a
// Go guest takes milliseconds).
func TestCallExpiredContext(t *testing.T) {
	p := goPlugin(t, registry.New(), 2)
	before := p.Stats().Instances // New starts one
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 20; i++ { // acquire's select would pick the free slot half the time
		_, err := p.Call(ctx, "record_all")
		var ee *sys.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != sys.ExitCodeContextCanceled {
			t.Fatalf("call %d returned %v, want a canceled exit error", i, err)
		}
	}
	if st := p.Stats(); st.Instances != before || st.Timeouts != 20 || st.Errors != 20 || st.Replaced != 0 {
		t.Errorf("stats %+v, want %d instances (none started) and 20 timeouts", st, before)
	}
}

// spinning starts a call of the Go guest's spin export, which holds an
// instance until stop (which returns the call's error) ends it.
func spinning(p *plugin.Plugin) (stop func() error) {
	calls := p.Stats().Calls
	ctx, cancel := context.WithCancel(context.Background())
	spun := make(chan error, 1)
	go func() {
		_, err := p.Call(ctx, "spin")
		spun <- err
	}()
	for p.Stats().Calls == calls {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // for the call to take its instance
	return func() error {
		cancel()
		return <-spun
	}
}

// A call whose deadline passes while it waits for a busy pool ends like
// one stopped midway: a deadline exit error, counted as a timeout.
func TestCallDeadlineWhileWaiting(t *testing.T) {
	p := goPlugin(t, registry.New(), 1)
	for attempt := 1; ; attempt++ {
		stop := spinning(p)
		before := p.Stats()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := p.Call(ctx, "record_all")
		cancel()
		stop()
		if err == nil && attempt < 5 {
			continue // record_all took the instance first; spin ran after it
		}
		if !isDeadline(err) {
			t.Fatalf("waiting call returned %v, want a deadline exit error", err)
		}
		if st := p.Stats(); st.Timeouts != before.Timeouts+2 || st.Errors != before.Errors+2 {
			t.Errorf("stats %+v, want 2 more timeouts than %+v (the waiting call and the spin)", st, before)
		}
		return
	}
}

// A deadline that passes while the call starts a new instance (a Go
// guest's takes milliseconds) is one failed call: one timeout, one error,
// not one for the instance and one for the call. How long a start takes
// varies, so the calls try deadlines around it, and every failure must be
// counted once.
func TestCallDeadlineWhileStarting(t *testing.T) {
	p := goPlugin(t, registry.New(), 2)
	failed := uint64(0)
	for _, d := range []time.Duration{250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond} {
		// A spinning call holds one instance, so the call below starts
		// the pool's other one (each failed call closes its instance).
		stop := spinning(p)
		ctx, cancel := context.WithTimeout(context.Background(), d)
		_, err := p.Call(ctx, "record_all")
		cancel()
		if err != nil {
			if !isDeadline(err) {
				t.Fatalf("call with a %v deadline returned %v, want a deadline exit error", d, err)
			}
			failed++
		}
		if stop() == nil {
			t.Fatal("spin returned without an error")
		}
		failed++ // the spin
	}
	if st := p.Stats(); st.Errors != failed || st.Timeouts != failed {
		t.Errorf("stats %+v; want %d errors, all timeouts: each failed call counted once", st, failed)
	}
}

// A trap kills the instance with whatever it had buffered; a batch the
// guest sent before trapping stays applied.
func TestHostileTrap(t *testing.T) {
	r := registry.New()
	bad := hostilePlugin(t, r, plugin.Config{PoolSize: 2})
	if n := callP(t, bad, "define_many", 1); n != 1 { // counter m.n0, id 0
		t.Fatalf("define_many(1) = %d", n)
	}
	c := r.Counter("plugins.hostile.m.n0")
	if _, err := bad.Call(context.Background(), "trap_mid", 0, 100); err == nil {
		t.Fatal("trap_mid succeeded")
	}
	if v := c.Value(); v != 0 {
		t.Errorf("counter = %d after a trap before any flush, want 0", v)
	}
	if _, err := bad.Call(context.Background(), "flush_then_trap", 0, 100); err == nil {
		t.Fatal("flush_then_trap succeeded")
	}
	if v := c.Value(); v != 100 {
		t.Errorf("counter = %d after a flush then a trap, want 100", v)
	}
	if s := callP(t, bad, "add", 0, 5); s != 0 {
		t.Errorf("add after the traps = %d", s)
	}
	if v := c.Value(); v != 105 {
		t.Errorf("counter = %d, want 105", v)
	}
	st := bad.Stats()
	if st.Traps != 2 || st.Replaced != 2 || st.Timeouts != 0 || st.Errors != 2 {
		t.Errorf("stats %+v", st)
	}
}

// Memory cannot grow past MemoryLimitPages; the guest sees memory.grow fail.
func TestHostileMemoryLimit(t *testing.T) {
	bad := hostilePlugin(t, registry.New(), plugin.Config{MemoryLimitPages: 8})
	pages := callP(t, bad, "mem_pages")
	if pages < 1 || pages > 8 {
		t.Fatalf("guest starts with %d pages", pages)
	}
	if r := callP(t, bad, "grow", 1000); r != -1 {
		t.Errorf("grow(1000) = %d, want -1", r)
	}
	if r := callP(t, bad, "grow", uint64(8-pages)); r != pages {
		t.Errorf("grow to the limit = %d, want %d", r, pages)
	}
	if r := callP(t, bad, "grow", 1); r != -1 {
		t.Errorf("grow past the limit = %d, want -1", r)
	}
	if n := callP(t, bad, "define_many", 3); n != 3 {
		t.Errorf("define_many after the refused growth = %d", n)
	}
	if _, err := plugin.New(context.Background(), plugin.Config{
		Wasm: cGuest(t, "hostile"), Registry: registry.New(), MemoryLimitPages: 1,
	}); err == nil {
		t.Error("a guest needing more than the limit at start was accepted")
	}
}

func TestPluginNoInterrupt(t *testing.T) {
	ctx := context.Background()
	if p, err := plugin.New(ctx, plugin.Config{
		Wasm: cGuest(t, "cguest"), Registry: registry.New(), NoInterrupt: true, CallTimeout: time.Second,
	}); err == nil {
		p.Close(ctx)
		t.Fatal("NoInterrupt with a CallTimeout was accepted")
	}
	r := registry.New()
	p := newPlugin(t, plugin.Config{Wasm: cGuest(t, "cguest"), Registry: r, NoInterrupt: true, PoolSize: 2})
	callP(t, p, "record_all")
	checkEveryKind(t, r, "c.", 1)
}

// Close while calls are in flight: every call returns (an error or a
// result), nothing panics, and the race detector sees no race.
func TestPluginCloseDuringCalls(t *testing.T) {
	r := registry.New()
	p, err := plugin.New(context.Background(), plugin.Config{
		Wasm: cGuest(t, "cguest"), Registry: r, PoolSize: 3, Cache: testCache,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 6)
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := p.Call(context.Background(), "events", 100); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := p.Close(context.Background()); err != nil {
		t.Error(err)
	}
	wg.Wait()
	close(errc)
	closed := 0
	for err := range errc {
		if errors.Is(err, plugin.ErrClosed) {
			closed++
		}
	}
	if closed == 0 {
		t.Error("no caller saw ErrClosed")
	}
	if err := p.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if st := p.Stats(); st.Instances != 0 {
		t.Errorf("%d instances alive after Close", st.Instances)
	}
}

// With a CacheDir, the module with its fuel checks is kept beside the
// compiled code, and a second plugin from the same bytes starts from it
// and behaves the same.
func TestPluginCacheDirKeepsRewrite(t *testing.T) {
	dir := t.TempDir()
	r := registry.New()
	for i := 0; i < 2; i++ {
		ctx := context.Background()
		p, err := plugin.New(ctx, plugin.Config{Name: "cg", Wasm: cGuest(t, "cguest"), Registry: r, Prefix: "plugins.cg", CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if s := callP(t, p, "record_all"); s != 0 {
			t.Fatalf("record_all = %d", s)
		}
		if m := p.Stats().Interrupt; m != plugin.InterruptFuel {
			t.Errorf("interrupt mode %q", m)
		}
		p.Close(ctx)
		kept, _ := filepath.Glob(filepath.Join(dir, "tapes-interrupt-v*.wasm"))
		if len(kept) != 1 {
			t.Fatalf("start %d: rewritten modules in the cache: %v", i+1, kept)
		}
	}
	checkEveryKind(t, r, "plugins.cg.c.", 2)
}
