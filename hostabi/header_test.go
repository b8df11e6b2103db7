package hostabi_test

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/tapes-go/tapes/hostabi"
	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// tapes.h restates wire's numbers and hostabi's function names for C; they must agree.
func TestHeaderConstants(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "guest", "c", "tapes.h"))
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]int64{}
	for _, m := range regexp.MustCompile(`(?m)^\s*(?:#define\s+)?(TAPES_[A-Z0-9_]+)\s*=?\s*(-?\d+)\b`).FindAllSubmatch(src, -1) {
		v, _ := strconv.ParseInt(string(m[2]), 10, 64)
		consts[string(m[1])] = v
	}
	want := map[string]int64{
		"TAPES_COUNTER": int64(wire.KindCounter), "TAPES_GAUGE": int64(wire.KindGauge),
		"TAPES_METER": int64(wire.KindMeter), "TAPES_TIMER": int64(wire.KindTimer),
		"TAPES_HISTOGRAM":    int64(wire.KindHistogram),
		"TAPES_MAX_NAME_LEN": wire.MaxNameLen, "TAPES_RECORD_SIZE": wire.RecordSize,
		"TAPES_OK":                   int64(wire.StatusOK),
		"TAPES_ERR_MEMORY":           int64(wire.StatusMemory),
		"TAPES_ERR_INVALID_NAME":     int64(wire.StatusInvalidName),
		"TAPES_ERR_INVALID_KIND":     int64(wire.StatusInvalidKind),
		"TAPES_ERR_KIND_CONFLICT":    int64(wire.StatusKindConflict),
		"TAPES_ERR_PREFIX_CONFLICT":  int64(wire.StatusPrefixConflict),
		"TAPES_ERR_TOO_MANY_METRICS": int64(wire.StatusTooManyMetrics),
		"TAPES_ERR_UNKNOWN_ID":       int64(wire.StatusUnknownID),
		"TAPES_ERR_WRONG_KIND":       int64(wire.StatusWrongKind),
		"TAPES_ERR_BAD_RECORD":       int64(wire.StatusBadRecord),
		"TAPES_ERR_BAD_VALUE":        int64(wire.StatusBadValue),
	}
	for name, v := range want {
		got, ok := consts[name]
		if !ok {
			t.Errorf("tapes.h does not define %s", name)
		} else if got != v {
			t.Errorf("tapes.h: %s = %d, want %d", name, got, v)
		}
	}
	// Every function the host module exports, but the check that only
	// rewritten modules call, is one tapes.h imports.
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	if _, err := hostabi.Instantiate(ctx, rt, hostabi.RegistrySink(registry.New()), hostabi.Config{}); err != nil {
		t.Fatal(err)
	}
	fns := rt.Module(hostabi.ModuleName).ExportedFunctionDefinitions()
	if len(fns) != 8 {
		t.Errorf("the host module exports %d functions, want 8", len(fns))
	}
	for fn := range fns {
		if fn == "interrupt_check" {
			continue
		}
		if !regexp.MustCompile(`TAPES_IMPORT\("` + fn + `"\)`).Match(src) {
			t.Errorf("tapes.h does not import %q", fn)
		}
	}
}

// The header compiles as C++ too (and under -Wall -Wextra -Werror as C).
func TestHeaderCompilesAsCxx(t *testing.T) {
	clang := testenv.WasiClang(t)
	inc := filepath.Join(testenv.RepoRoot(), "guest", "c")
	dir := t.TempDir()
	cxx := filepath.Join(dir, "g.cc")
	os.WriteFile(cxx, []byte(`#define TAPES_IMPLEMENTATION
#include "tapes.h"
static int32_t id = -1;
extern "C" __attribute__((export_name("run"))) int32_t run() {
	if (id < 0) id = tapes_define(TAPES_HISTOGRAM, "cxx.h");
	tapes_histogram_update(id, 2.0);
	return tapes_flush();
}
`), 0o644)
	out := filepath.Join(dir, "g.wasm")
	// wasi-libc ships no C++ standard library; the header needs none.
	cmd := exec.Command(clang, "--target=wasm32-wasi", "-x", "c++", "-O2", "-mexec-model=reactor", "-nostdlib++",
		"-fno-exceptions", "-Wall", "-Wextra", "-Werror", "-I", inc, "-o", out, cxx)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd, err, b)
	}
	cmd = exec.Command(clang, "--target=wasm32-wasi", "-std=c11", "-O2", "-mexec-model=reactor", "-Wall", "-Wextra",
		"-Werror", "-pedantic", "-I", inc, "-o", filepath.Join(dir, "c.wasm"), filepath.Join("testdata", "cguest.c"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd, err, b)
	}
	wasm, _ := os.ReadFile(out)
	r := registry.New()
	mod, _ := instantiate(t, wasm, r, hostabi.Config{})
	if s := call(t, mod, "run"); s != 0 {
		t.Fatalf("run = %d", s)
	}
	if h := r.Histogram("cxx.h"); h.Count() != 1 || h.Sum() != 2 {
		t.Errorf("histogram count %d sum %v", h.Count(), h.Sum())
	}
}

func TestSingleCallStatuses(t *testing.T) {
	r := registry.New()
	mod, _ := instantiate(t, cGuest(t, "hostile"), r, hostabi.Config{})
	tm := defineName(t, mod, uint32(wire.KindTimer), "t")
	g := defineName(t, mod, uint32(wire.KindGauge), "g")
	h := defineName(t, mod, uint32(wire.KindHistogram), "h")
	m := defineName(t, mod, uint32(wire.KindMeter), "m")
	f := api.EncodeF64
	for _, c := range []struct {
		fn     string
		params []uint64
		want   wire.Status
	}{
		{"timer", []uint64{uint64(tm), api.EncodeI64(-1)}, wire.StatusBadValue},
		{"timer", []uint64{uint64(tm), 5e6}, 0},
		{"timer", []uint64{uint64(g), 5e6}, wire.StatusWrongKind},
		{"gauge", []uint64{uint64(g), f(math.NaN())}, 0},
		{"gauge", []uint64{uint64(g), f(-3.5)}, 0},
		{"gauge", []uint64{uint64(tm), f(1)}, wire.StatusWrongKind},
		{"histogram", []uint64{uint64(h), f(math.Inf(1))}, 0}, // dropped by the registry
		{"histogram", []uint64{uint64(h), f(8)}, 0},
		{"histogram", []uint64{77, f(8)}, wire.StatusUnknownID},
		{"meter", []uint64{uint64(m), 4}, 0},
		{"meter", []uint64{uint64(h), 4}, wire.StatusWrongKind},
		{"add", []uint64{uint64(m), 4}, wire.StatusWrongKind},
	} {
		res, err := mod.ExportedFunction(c.fn).Call(context.Background(), c.params...)
		if err != nil {
			t.Fatal(err)
		}
		if s := wire.Status(api.DecodeI32(res[0])); s != c.want {
			t.Errorf("%s%v = %v, want %v", c.fn, c.params, s, c.want)
		}
	}
	if ts := r.Timer("t").Snapshot(); ts.Count != 1 || ts.Sum != 0.005 {
		t.Errorf("timer count %d sum %v", ts.Count, ts.Sum)
	}
	if v := r.Gauge("g", nil).Value(); v != -3.5 {
		t.Errorf("gauge = %v", v)
	}
	if hs := r.Histogram("h"); hs.Count() != 1 || hs.Sum() != 8 {
		t.Errorf("histogram count %d sum %v", hs.Count(), hs.Sum())
	}
	if c := r.Meter("m").Count(); c != 4 {
		t.Errorf("meter = %d", c)
	}
}
