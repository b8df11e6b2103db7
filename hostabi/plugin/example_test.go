package plugin_test

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
	"github.com/tapes-go/tapes/hostabi/plugin"
	"github.com/tapes-go/tapes/registry"
)

// AddInterruptChecks lets a runtime you manage stop a guest at a call's
// deadline without wazero's WithCloseOnContextDone; here a guest that
// spins forever is stopped after 100 ms.
func ExampleAddInterruptChecks() {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx) // WithCloseOnContextDone stays off
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	if _, err := hostabi.Instantiate(ctx, rt, hostabi.RegistrySink(registry.New()), hostabi.Config{}); err != nil {
		panic(err)
	}

	wasm, err := os.ReadFile("../testdata/hostile.wasm") // built from testdata/hostile.c
	if err != nil {
		panic(err)
	}
	if wasm, err = plugin.AddInterruptChecks(wasm); err != nil {
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

// New runs a plugin with a pool of instances, a memory limit and a
// deadline per call, replacing any instance whose call fails.
func ExampleNew() {
	ctx := context.Background()
	r := registry.New()
	p, err := plugin.New(ctx, plugin.Config{
		Name:             "demo",
		Path:             "../testdata/cguest.wasm",
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
