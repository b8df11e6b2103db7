package hostabi_test

import (
	"context"
	"fmt"
	"os"

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

	// WithCloseOnContextDone lets a context stop a guest stuck in a loop;
	// hostabi/plugin's AddInterruptChecks does it for less (see its example).
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(true))
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	host, err := hostabi.Instantiate(ctx, rt, hostabi.RegistrySink(r), hostabi.Config{Prefix: "plugins.demo", MaxMetrics: 100})
	if err != nil {
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
	st := host.Stats() // what the guest did, including what it may have ignored
	fmt.Println(st.Defines, st.Records, st.Rejected)
	// Output:
	// 7
	// 42.5
	// 5 11 0
}
