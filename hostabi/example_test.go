package hostabi_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/tapes-go/tapes/hostabi"
	"github.com/tapes-go/tapes/registry"
)

// Instantiate adds the "tapes" host module to a runtime you manage; guests
// instantiated afterwards record into the registry under the prefix.
func ExampleInstantiate() {
	ctx := context.Background()
	r := registry.New()

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
