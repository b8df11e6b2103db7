package hostabi_test

import (
	"context"
	"math"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/tapes-go/tapes/hostabi"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// instantiate runs wasm in a fresh runtime with the tapes host module and
// WASI, and returns the guest module and the host module.
func instantiate(t *testing.T, wasm []byte, r *registry.Registry, cfg hostabi.Config) (api.Module, *hostabi.Module) {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { rt.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	host, err := hostabi.Instantiate(ctx, rt, hostabi.RegistrySink(r), cfg)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
	if err != nil {
		t.Fatal(err)
	}
	return mod, host
}

func call(t *testing.T, mod api.Module, name string, params ...uint64) int32 {
	t.Helper()
	res, err := mod.ExportedFunction(name).Call(context.Background(), params...)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(res) == 0 {
		return 0
	}
	return api.DecodeI32(res[0])
}

// checkEveryKind checks the values record_all leaves after n calls.
func checkEveryKind(t *testing.T, r *registry.Registry, prefix string, n int) {
	t.Helper()
	get := func(name string) registry.Metric {
		m, ok := r.Get(prefix + name)
		if !ok {
			t.Fatalf("metric %q missing; registry has %d metrics", prefix+name, r.Len())
		}
		return m
	}
	if v := get("requests").(*registry.Counter).Value(); v != int64(7*n) {
		t.Errorf("counter = %d, want %d", v, 7*n)
	}
	if v := get("temperature").(*registry.Gauge).Value(); v != 42.5 {
		t.Errorf("gauge = %v, want 42.5", v)
	}
	if v := get("bytes").(*registry.Meter).Count(); v != int64(6*n) {
		t.Errorf("meter = %d, want %d", v, 6*n)
	}
	ts := get("latency").(*registry.Timer).Snapshot()
	if ts.Count != uint64(2*n) || math.Abs(ts.Sum-0.003*float64(n)) > 1e-12*float64(n) { // float rounding grows with n
		t.Errorf("timer count %d sum %v, want %d and %v", ts.Count, ts.Sum, 2*n, 0.003*float64(n))
	}
	hs := get("size").(*registry.Histogram).Snapshot()
	if hs.Count != uint64(2*n) || hs.Sum != 4*float64(n) {
		t.Errorf("histogram count %d sum %v, want %d and %v", hs.Count, hs.Sum, 2*n, 4*float64(n))
	}
}

func TestCGuestEveryKind(t *testing.T) {
	r := registry.New()
	mod, host := instantiate(t, cGuest(t, "cguest"), r, hostabi.Config{Prefix: "plugins.cg"})
	for i := 0; i < 3; i++ {
		if s := call(t, mod, "record_all"); s != 0 {
			t.Fatalf("record_all = %d (%v)", s, wire.Status(s))
		}
		if n := call(t, mod, "pending"); n != 6 {
			t.Fatalf("%d records buffered, want 6", n)
		}
		if s := call(t, mod, "tapes_flush"); s != 0 {
			t.Fatalf("tapes_flush = %d", s)
		}
	}
	checkEveryKind(t, r, "plugins.cg.c.", 3)
	if r.Len() != 5 {
		t.Errorf("registry has %d metrics, want 5", r.Len())
	}
	if st := host.Stats(); st.Defines != 5 || st.Rejected != 0 || st.Batches != 3 || st.Records != 3*11 {
		t.Errorf("stats: defines %d rejected %d batches %d records %d", st.Defines, st.Rejected, st.Batches, st.Records)
	}
}
