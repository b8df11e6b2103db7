package hostabi_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/tapes-go/tapes/hostabi"
	"github.com/tapes-go/tapes/registry"
)

// Instantiate adds the "tapes" host module to a runtime you manage; guests
// instantiated afterwards record into the registry under the prefix.
func ExampleInstantiate() {
	ctx := context.Background()
	r := registry.New()

	// WithCloseOnContextDone lets a context stop a guest stuck in a loop;
	// AddInterruptChecks does it for less (see its example).
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(true))
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	if _, err := hostabi.Instantiate(ctx, rt, r, hostabi.WithPrefix("plugins.demo"), hostabi.WithMaxMetrics(100)); err != nil {
		panic(err)
	}

	wasm, err := os.ReadFile("testdata/cguest.wasm") // built from testdata/cguest.c
	if err != nil {
		panic(err)
	}
	mod, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
	if err != nil {
		panic(err)
	}
	mod.ExportedFunction("record_all").Call(ctx)
	mod.ExportedFunction("tapes_flush").Call(ctx) // a plugin runner does this after every call

	fmt.Println(r.Counter("plugins.demo.c.requests").Value())
	fmt.Println(r.Gauge("plugins.demo.c.temperature", nil).Value())
	// Output:
	// 7
	// 42.5
}

// AddInterruptChecks lets a runtime you manage stop a guest at a call's
// deadline without wazero's WithCloseOnContextDone; here a guest that
// spins forever is stopped after 100 ms.
func ExampleAddInterruptChecks() {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx) // WithCloseOnContextDone stays off
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	if _, err := hostabi.Instantiate(ctx, rt, registry.New()); err != nil {
		panic(err)
	}

	wasm, err := os.ReadFile("testdata/hostile.wasm") // built from testdata/hostile.c
	if err != nil {
		panic(err)
	}
	if wasm, err = hostabi.AddInterruptChecks(wasm); err != nil {
		panic(err)
	}
	mod, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
	if err != nil {
		panic(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = mod.ExportedFunction("spin").Call(cctx)
	var ee *sys.ExitError
	fmt.Println(errors.As(err, &ee) && ee.ExitCode() == sys.ExitCodeDeadlineExceeded)
	// Output:
	// true
}

// NewPlugin runs a plugin with a pool of instances, a memory limit and a
// deadline per call, replacing any instance whose call fails.
func ExampleNewPlugin() {
	ctx := context.Background()
	r := registry.New()
	p, err := hostabi.NewPlugin(ctx, hostabi.PluginConfig{
		Name:             "demo",
		Path:             "testdata/cguest.wasm",
		Prefix:           "plugins.demo",
		Registry:         r,
		PoolSize:         4,
		MemoryLimitPages: 256,
		CallTimeout:      time.Second,
	})
	if err != nil {
		panic(err)
	}
	defer p.Close(ctx)

	for i := 0; i < 3; i++ {
		if _, err := p.Call(ctx, "record_all"); err != nil {
			panic(err)
		}
	}
	fmt.Println(r.Counter("plugins.demo.c.requests").Value())
	fmt.Println(r.Meter("plugins.demo.c.bytes").Count())
	st := p.Stats()
	fmt.Println(st.Calls, st.Errors, st.Replaced)
	// Output:
	// 21
	// 18
	// 3 0 0
}
