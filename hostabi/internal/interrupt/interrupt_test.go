package interrupt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

// builds holds the guests the tests build from source.
var builds testenv.Builds

func TestMain(m *testing.M) {
	os.Exit(builds.Run(m))
}

// check is the import the tests' rewrites call.
var check = Import{Module: "tapes", Name: "interrupt_check"}

// countdown is a module written out by hand: "loop"(n) runs a loop n times
// and returns how many iterations it made. It has no import, global or
// custom section, so the rewrite must create the first two.
var countdown = []byte{
	0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x06, 0x01, 0x60, 0x01, 0x7F, 0x01, 0x7F, // type 0: (i32) -> i32
	0x03, 0x02, 0x01, 0x00, // func 0: type 0
	0x07, 0x08, 0x01, 0x04, 'l', 'o', 'o', 'p', 0x00, 0x00, // export "loop" = func 0
	0x0A, 0x23, 0x01, 0x21, // code: one body of 33 bytes
	0x01, 0x01, 0x7F, // one i32 local
	0x02, 0x40, // block
	0x03, 0x40, // loop
	0x20, 0x00, 0x45, 0x0D, 0x01, // br_if 1 (local 0 == 0)
	0x20, 0x00, 0x41, 0x01, 0x6B, 0x21, 0x00, // local 0 -= 1
	0x20, 0x01, 0x41, 0x01, 0x6A, 0x21, 0x01, // local 1 += 1
	0x0C, 0x00, // br 0
	0x0B, 0x0B, // end loop, end block
	0x20, 0x01, 0x0B, // local 1, end
}

// nested is countdown's loop as function 0 ("inner"), called with 50 from
// every iteration of function 1's loop ("outer"(n) returns the sum).
var nested = []byte{
	0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x06, 0x01, 0x60, 0x01, 0x7F, 0x01, 0x7F, // type 0: (i32) -> i32
	0x03, 0x03, 0x02, 0x00, 0x00, // two functions of type 0
	0x07, 0x09, 0x01, 0x05, 'o', 'u', 't', 'e', 'r', 0x00, 0x01, // export "outer" = func 1
	0x0A, 0x47, 0x02, // code: two bodies
	0x21, // inner, 33 bytes: countdown's body
	0x01, 0x01, 0x7F, 0x02, 0x40, 0x03, 0x40, 0x20, 0x00, 0x45, 0x0D, 0x01,
	0x20, 0x00, 0x41, 0x01, 0x6B, 0x21, 0x00, 0x20, 0x01, 0x41, 0x01, 0x6A, 0x21, 0x01,
	0x0C, 0x00, 0x0B, 0x0B, 0x20, 0x01, 0x0B,
	0x23, // outer, 35 bytes
	0x01, 0x01, 0x7F, 0x02, 0x40, 0x03, 0x40, 0x20, 0x00, 0x45, 0x0D, 0x01,
	0x20, 0x00, 0x41, 0x01, 0x6B, 0x21, 0x00, // n--
	0x20, 0x01, 0x41, 0x32, 0x10, 0x00, 0x6A, 0x21, 0x01, // total += inner(50)
	0x0C, 0x00, 0x0B, 0x0B, 0x20, 0x01, 0x0B,
}

// run instantiates wasm after rewriting it with the given fuel, with a
// check function that counts its calls and fails the call at the stop-th.
func run(t *testing.T, wasm []byte, fuel int32, stop int, n uint32) (uint32, int, error) {
	return runExport(t, wasm, "loop", fuel, stop, n)
}

func runExport(t *testing.T, wasm []byte, export string, fuel int32, stop int, n uint32) (uint32, int, error) {
	t.Helper()
	out, err := Rewrite(wasm, check, fuel)
	if err != nil {
		t.Fatal(err)
	}
	// wazero's own checks end a loop the rewrite failed to instrument,
	// so that such a failure is reported, not a hung test.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(true))
	defer rt.Close(ctx)
	calls := 0
	errStop := errors.New("stopped")
	_, err = rt.NewHostModuleBuilder(check.Module).NewFunctionBuilder().
		WithGoFunction(api.GoFunc(func(_ context.Context, s []uint64) {
			calls++
			if calls == stop {
				panic(errStop)
			}
			s[0] = uint64(fuel)
		}), nil, []api.ValueType{api.ValueTypeI32}).
		Export(check.Name).Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := rt.Instantiate(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	res, err := mod.ExportedFunction(export).Call(ctx, uint64(n))
	if err != nil {
		if !errors.Is(err, errStop) {
			t.Fatalf("call failed with %v, want the check's error", err)
		}
		return 0, calls, err
	}
	return uint32(res[0]), calls, nil
}

// The rewritten loop computes what it did before and calls the check once
// per fuel loop headers (the header runs n+1 times: the last one exits);
// a check that fails ends the call with its error.
func TestRewriteCountsLoopHeaders(t *testing.T) {
	const fuel = 100
	for _, n := range []uint32{0, 1, fuel - 2, fuel - 1, fuel, 10*fuel + 3, 12345} {
		got, calls, err := run(t, countdown, fuel, -1, n)
		if err != nil || got != n {
			t.Fatalf("loop(%d) = %d, %v", n, got, err)
		}
		if want := int(n+1) / fuel; calls != want {
			t.Errorf("loop(%d): %d checks, want %d", n, calls, want)
		}
	}
	if _, calls, err := run(t, countdown, fuel, 3, 1<<30); err == nil || calls != 3 {
		t.Fatalf("a failing check: %d calls, err %v", calls, err)
	}
}

// The fuel is one budget for the whole call: every loop header, in any
// function, spends from it, so the check runs once per fuel loop headers
// however the loops nest across functions (a fuel counter per function
// invocation would let loops nested d calls deep run fuel^d iterations
// between checks).
func TestRewriteFuelSpansCalls(t *testing.T) {
	const fuel, n = 100, 1000
	got, calls, err := runExport(t, nested, "outer", fuel, -1, n)
	if err != nil || got != 50*n {
		t.Fatalf("outer(%d) = %d, %v", n, got, err)
	}
	headers := 1 + (n + 1) + n*(50+1) // outer's entry (it calls) and loop, and inner's loop for each call
	if want := headers / fuel; calls != want {
		t.Errorf("%d checks for %d loop headers at fuel %d, want %d", calls, headers, fuel, want)
	}
}

// Every guest this repository builds rewrites, compiles, and keeps its
// imports (plus the check), exports and function count.
func TestRewriteTestdata(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/*.wasm")
	more, _ := filepath.Glob("../../testdata/*/*.wasm")
	files = append(files, more...)
	if len(files) < 4 {
		t.Fatalf("found only %v", files)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			wasm, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Rewrite(wasm, check, 4096)
			if err != nil {
				t.Fatal(err)
			}
			before, err := rt.CompileModule(ctx, wasm)
			if err != nil {
				t.Fatal(err)
			}
			after, err := rt.CompileModule(ctx, out)
			if err != nil {
				t.Fatalf("rewritten module does not compile: %v", err)
			}
			bi, ai := before.ImportedFunctions(), after.ImportedFunctions()
			if len(ai) != len(bi)+1 {
				t.Fatalf("%d imports after, %d before", len(ai), len(bi))
			}
			last := ai[len(ai)-1]
			if mod, name, _ := last.Import(); mod != check.Module || name != check.Name {
				t.Errorf("last import is %s.%s", mod, name)
			}
			be, ae := before.ExportedFunctions(), after.ExportedFunctions()
			if len(be) != len(ae) {
				t.Fatalf("%d exports after, %d before", len(ae), len(be))
			}
			for name, d := range be {
				if a, ok := ae[name]; !ok || a.Index() != d.Index()+1 || a.Name() != d.Name() {
					t.Errorf("export %s: before %d %q, after %+v", name, d.Index(), d.Name(), a)
				}
			}
		})
	}
}

// FuzzRewrite is the differential target: no input panics the rewriter,
// and the rewriter and wazero (with CoreFeatures, as New runs it)
// agree on every input the rewriter does not call malformed:
//   - an input refused as ErrUnsupported (the fallback) is refused by
//     wazero as well, so it never runs with wazero's weaker checks;
//   - a rewritten input is accepted by wazero after the rewrite exactly
//     when before: an invalid module stays invalid (the rewrite must not
//     give meaning to an index past the module's own, nor read an
//     instruction stream wazero does not), a valid one stays valid (a
//     check inserted inside an instruction whose length the rewriter got
//     wrong makes it invalid).
//
// Input the rewriter calls malformed never reaches wazero (New
// refuses it), which matters: wazero 1.12 runs out of memory on some of
// it, and its compiler panics on some encodings its validator accepts
// (see refusedModules). That every module wazero accepts is rewritten is
// TestRewriteTestdata's job: the fuzzer's inputs are almost all invalid.
func FuzzRewrite(f *testing.F) {
	f.Add(countdown)
	for _, p := range []string{"../../testdata/cguest.wasm", "../../testdata/hostile.wasm", "../../testdata/ccmd.wasm"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, c := range refusedModules() {
		f.Add(c.wasm)
	}
	for _, c := range unsupportedModules() {
		f.Add(c.wasm)
	}
	f.Add(loopModule(recursion))
	ctx := context.Background()
	// Memory is limited so that running an accepted module stays cheap;
	// the limit refuses a module and its rewrite alike.
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCoreFeatures(CoreFeatures).WithMemoryLimitPages(16))
	defer rt.Close(ctx)
	_, err := rt.NewHostModuleBuilder(check.Module).NewFunctionBuilder().
		WithGoFunction(api.GoFunc(func(ctx context.Context, s []uint64) {
			if ctx.Err() != nil {
				panic(sys.NewExitError(sys.ExitCodeDeadlineExceeded))
			}
			s[0] = 7
		}), nil, []api.ValueType{api.ValueTypeI32}).
		Export(check.Name).Instantiate(ctx)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := Rewrite(b, check, 7)
		if errors.Is(err, ErrUnsupported) {
			if m, cerr := rt.CompileModule(ctx, b); cerr == nil {
				m.Close(ctx)
				t.Fatalf("Rewrite: %v, but wazero accepts the module: it would run with wazero's checks alone", err)
			}
			return
		}
		if err != nil {
			return // malformed or not modeled: refused, never reaches wazero
		}
		orig, cerr := rt.CompileModule(ctx, b)
		if cerr != nil {
			if m, err := rt.CompileModule(ctx, out); err == nil {
				m.Close(ctx)
				t.Fatalf("wazero refuses the module (%v) but accepts its rewrite", cerr)
			}
			return
		}
		orig.Close(ctx)
		m, err := rt.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("rewritten module does not compile: %v", err)
		}
		defer m.Close(ctx)
		runsToDeadline(t, rt, m)
	})
}

// runsToDeadline instantiates m (if its imports are only the check) and
// calls each of its exported functions with zeros, each with a 5 ms
// deadline: the start function and every call must end within seconds,
// however the rewriter read the module.
func runsToDeadline(t *testing.T, rt wazero.Runtime, m wazero.CompiledModule) {
	for _, f := range m.ImportedFunctions() {
		if mod, name, _ := f.Import(); mod != check.Module || name != check.Name {
			return
		}
	}
	if len(m.ImportedMemories()) > 0 {
		return
	}
	const deadline, bound = 5 * time.Millisecond, 5 * time.Second
	watchdog := time.AfterFunc(time.Minute, func() {
		panic("FuzzRewrite: a rewritten module ran a minute past its deadline")
	})
	defer watchdog.Stop()
	bounded := func(what string, call func(ctx context.Context) error) {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		err := call(ctx)
		if took := time.Since(start); took > deadline+bound {
			t.Fatalf("%s ended after %v (%v), past its %v deadline plus %v", what, took, err, deadline, bound)
		}
	}
	var mod api.Module
	bounded("instantiation", func(ctx context.Context) (err error) {
		mod, err = rt.InstantiateModule(ctx, m, wazero.NewModuleConfig().WithName(""))
		return err
	})
	if mod == nil {
		return
	}
	defer mod.Close(context.Background())
	for name, def := range m.ExportedFunctions() {
		params := make([]uint64, len(def.ParamTypes()))
		bounded("call of "+name, func(ctx context.Context) error {
			_, err := mod.ExportedFunction(name).Call(ctx, params...)
			return err
		})
	}
}

// Modules that would make wazero allocate without bound are refused as
// malformed, not passed on (not even to the fallback): a vector declaring
// more entries than its section has bytes, a function declaring 2^32-1
// locals, a type with 2^32-1 parameters, a 4 GiB data segment in a few
// bytes, a "name" section declaring more names than it holds; and an
// unknown section id is malformed, not unsupported.
func TestRewriteRefusesHugeDeclarations(t *testing.T) {
	voidType := vec(secType, 1, 0x60, 0x00, 0x00)
	oneFunc := vec(secFunction, 1, 0x00)
	fence := []byte{0x00, 0xFE, 0x03, 0x00, 0x0B} // atomic.fence: not decoded, so the body falls back
	hugeNames := []byte{secCustom, 0x04, 'n', 'a', 'm', 'e', 0x01, 0x05, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F}
	imports := []byte{
		0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00,
		0x02, 0x05, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, // 2^32-1 imports in 5 bytes
	}
	locals := append([]byte(nil), countdown...)
	// countdown's one local entry "01 01 7F" becomes "01 FF FF FF FF 0F 7F":
	// the body grows by 4 bytes, and so do the section and body sizes.
	i := len(countdown) - 33 // start of the body: after the code section's count and size
	locals = append(locals[:i+1], append([]byte{0xFF, 0xFF, 0xFF, 0xFF, 0x0F}, countdown[i+2:]...)...)
	locals[i-3] += 4 // code section size
	locals[i-1] += 4 // body size
	for name, c := range map[string]struct {
		wasm []byte
		want string
	}{
		"imports": {imports, "declares 4294967295 entries"},
		"locals":  {locals, "more than 50000 locals"},
		"params": {[]byte{
			0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00,
			0x01, 0x07, 0x01, 0x60, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, // a type with 2^32-1 parameters
		}, "declares 4294967295 values"},
		"data": {[]byte{
			0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00,
			0x0B, 0x07, 0x01, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, // a passive segment of 4 GiB
		}, "truncated"},
		"section id": {[]byte{0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00, 0x80, 0x00}, "unknown section id 128"},
		// wazero makes the map of 2^32-1 function names before reading any.
		"function names": {assemble(hugeNames), "truncated"},
		// Even when the code falls back to wazero's checks: the name
		// section is checked while the module is scanned.
		"function names after an unsupported body": {assemble(voidType, oneFunc, code(fence), hugeNames), "truncated"},
		// The rewrite adds a type and an import behind the module's own:
		// bytes after the last entry would become one, here a type with
		// 2^32-1 parameters.
		"type section with bytes after it":   {assemble(vec(secType, 0, 0x60, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F)), "bytes after its contents"},
		"import section with bytes after it": {assemble(voidType, vec(secImport, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F)), "bytes after its contents"},
		// wazero reads past a subsection's declared end, so these two
		// bytes would be its next subsection: 2^32-1 local name maps.
		"name subsection with bytes after it": {assemble([]byte{secCustom, 0x04, 'n', 'a', 'm', 'e',
			0x00, 0x07, 0x00, 0x02, 0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F}), "name subsection 0 has bytes after its contents"},
	} {
		_, err := Rewrite(c.wasm, check, 7)
		if err == nil || errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Rewrite = %v, want an error saying %q", name, err, c.want)
		}
	}
}

// assemble assembles a binary module from sections given as id and payload.
func assemble(sections ...[]byte) []byte {
	b := []byte{0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00}
	for _, s := range sections {
		w := &writer{}
		w.section(s[0], s[1:])
		b = append(b, w.b...)
	}
	return b
}

// vec prefixes a section id to a vector of n already encoded entries.
func vec(id byte, n uint32, entries ...byte) []byte {
	w := &writer{}
	w.u32(n)
	return append([]byte{id}, append(w.b, entries...)...)
}

// code is a code section with the given bodies (locals and instructions
// encoded by the caller).
func code(bodies ...[]byte) []byte {
	w := &writer{}
	w.u32(uint32(len(bodies)))
	for _, b := range bodies {
		w.u32(uint32(len(b)))
		w.raw(b)
	}
	return append([]byte{secCode}, w.b...)
}

// An index one past the module's own names, after the rewrite, what the
// rewrite adds; such modules are invalid, and must stay so. The first case
// would otherwise refuel itself forever and never be stopped.
func TestRewriteRefusesOutOfRangeIndices(t *testing.T) {
	voidType := vec(secType, 1, 0x60, 0x00, 0x00) // type 0: () -> ()
	oneFunc := vec(secFunction, 1, 0x00)
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	for name, wasm := range map[string][]byte{
		"global.set of the fuel": assemble(voidType, oneFunc, code([]byte{
			0x00,       // no locals
			0x03, 0x40, // loop
			0x41, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, // i32.const 0x7fffffff
			0x24, 0x00, // global.set 0 (the module declares none)
			0x0C, 0x00, // br 0
			0x0B, 0x0B, // end, end
		})),
		"call of the check": assemble(voidType, oneFunc, code([]byte{
			0x00, 0x10, 0x01, 0x1A, 0x0B, // call 1 (only function 0 exists); drop; end
		})),
		"call_indirect of the check's type": assemble(voidType, oneFunc, vec(secTable, 1, 0x70, 0x00, 0x01), code([]byte{
			0x00, 0x41, 0x00, 0x11, 0x01, 0x00, 0x1A, 0x0B, // i32.const 0; call_indirect type 1; drop; end
		})),
		"export of the fuel global": assemble(voidType, oneFunc, vec(secExport, 1, 0x01, 'g', 0x03, 0x00), code([]byte{0x00, 0x0B})),
		"u32 past 2^32-1": assemble(voidType, oneFunc, code([]byte{
			0x00, 0x10, 0x80, 0x80, 0x80, 0x80, 0x10, 0x0B, // call 2^32 (0 once the high bits are dropped)
		})),
	} {
		if m, err := rt.CompileModule(ctx, wasm); err == nil {
			m.Close(ctx)
			t.Fatalf("%s: wazero accepts the input; the case tests nothing", name)
		}
		if _, err := Rewrite(wasm, check, 7); err == nil || errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: Rewrite = %v, want a malformed-module error", name, err)
		}
	}
}

// Immediates the rewrite does not change are copied as written. wazero
// refuses a memory instruction whose reserved zero takes more than one
// byte; re-encoding 0x80 0x00 as 0x00 turned such modules into ones it
// accepts (found by FuzzRewrite). A body with no loop and no index to
// shift comes out byte for byte.
func TestRewriteKeepsEncodings(t *testing.T) {
	voidType := vec(secType, 1, 0x60, 0x00, 0x00)
	oneFunc := vec(secFunction, 1, 0x00)
	memory := vec(secMemory, 1, 0x00, 0x01)
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	for name, c := range map[string]struct {
		body  []byte
		valid bool
	}{
		"memory.size": {[]byte{0x00, 0x3F, 0x80, 0x00, 0x1A, 0x0B}, false},
		"memory.grow": {[]byte{0x00, 0x41, 0x00, 0x40, 0x80, 0x00, 0x1A, 0x0B}, false},
		"memory.fill": {[]byte{0x00, 0x41, 0x00, 0x41, 0x00, 0x41, 0x00, 0xFC, 0x0B, 0x80, 0x00, 0x0B}, false},
		"memory.copy": {[]byte{0x00, 0x41, 0x00, 0x41, 0x00, 0x41, 0x00, 0xFC, 0x0A, 0x00, 0x80, 0x00, 0x0B}, false},
		"overlong local, label, memarg and sub-opcode": {[]byte{
			0x01, 0x81, 0x00, 0x7F, // one i32 local, its count in two bytes
			0x02, 0x40, // block
			0x41, 0x00, 0x20, 0x80, 0x00, 0x0D, 0x80, 0x00, // br_if 0 (local.get 0)
			0x0E, 0x80, 0x00, 0x80, 0x00, // br_table with no labels, default 0
			0x0B,
			0x41, 0x00, 0x28, 0x82, 0x00, 0x80, 0x00, 0x21, 0x80, 0x00, // local.set 0 (i32.load)
			0x43, 0x00, 0x00, 0x00, 0x00, 0xFC, 0x80, 0x00, 0x1A, // i32.trunc_sat_f32_s, sub-opcode in two bytes; drop
			0x0B,
		}, true},
	} {
		wasm := assemble(voidType, oneFunc, memory, code(c.body))
		if m, err := rt.CompileModule(ctx, wasm); (err == nil) != c.valid {
			t.Fatalf("%s: wazero's verdict on the input is %v; the case tests nothing", name, err)
		} else if err == nil {
			m.Close(ctx)
		}
		out, err := Rewrite(wasm, check, 7)
		if err != nil && !c.valid && !errors.Is(err, ErrUnsupported) {
			continue // refused, as wazero refuses it
		}
		if err != nil {
			t.Fatalf("%s: Rewrite: %v", name, err)
		}
		if !bytes.Contains(out, c.body) {
			t.Errorf("%s: the body was not copied byte for byte", name)
		}
		m, err := rt.CompileModule(ctx, out)
		if (err == nil) != c.valid {
			t.Errorf("%s: wazero's verdict on the rewrite is %v, want valid=%v", name, err, c.valid)
		}
		if err == nil {
			m.Close(ctx)
		}
	}
}

// A debug section would be dropped, but one whose name is not UTF-8 is
// refused: wazero refuses the module, and dropping the section would make
// it valid.
func TestRewriteRefusesInvalidCustomNames(t *testing.T) {
	wasm := assemble([]byte{secCustom, 0x08, '.', 'd', 'e', 'b', 'u', 'g', '_', 0xFF})
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	if m, err := rt.CompileModule(ctx, wasm); err == nil {
		m.Close(ctx)
		t.Fatal("wazero accepts the input; the case tests nothing")
	}
	if _, err := Rewrite(wasm, check, 7); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("Rewrite = %v, want the name refused as not UTF-8", err)
	}
}

// A module the rewriter does not decode (here an atomic.fence, from the
// threads proposal) falls back to wazero's checks, but only after every
// body's locals were counted: wazero allocates them before validating.
func TestRewriteCountsLocalsBeforeFallingBack(t *testing.T) {
	voidType := vec(secType, 1, 0x60, 0x00, 0x00)
	twoFuncs := vec(secFunction, 2, 0x00, 0x00)
	fence := []byte{0x00, 0xFE, 0x03, 0x00, 0x0B}
	many := []byte{0x01, 0x80, 0xC2, 0xD7, 0x2F, 0x7F, 0x0B} // 100,000,000 i32 locals
	if _, err := Rewrite(assemble(voidType, twoFuncs, code(fence, []byte{0x00, 0x0B})), check, 7); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("fence: %v, want ErrUnsupported", err)
	}
	_, err := Rewrite(assemble(voidType, twoFuncs, code(fence, many)), check, 7)
	if err == nil || errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "locals") {
		t.Fatalf("fence then 10^8 locals: %v, want the locals refused", err)
	}
}

// loopModule wraps one function body of type (i32) -> i32, exported as
// "loop", in a module.
func loopModule(body []byte) []byte {
	code := append([]byte{byte(len(body))}, body...) // bodies here are under 128 bytes
	out := []byte{
		0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00,
		0x01, 0x06, 0x01, 0x60, 0x01, 0x7F, 0x01, 0x7F, // type 0: (i32) -> i32
		0x03, 0x02, 0x01, 0x00, // func 0: type 0
		0x07, 0x08, 0x01, 0x04, 'l', 'o', 'o', 'p', 0x00, 0x00, // export "loop" = func 0
		0x0A, byte(len(code) + 1), 0x01,
	}
	return append(out, code...)
}

// dispatchLoop is a loop laid out as Go's wasm backend lays out every
// function: a jump table on local 1 ($pc) at the loop header, three
// segments, and jumps that set $pc and branch to the loop. Each iteration
// counts n down in segment 0 and jumps forward to segment 2, which jumps
// back to segment 0 with the instruction back (by default "i32.const 0").
// Segment 1 adds 100 and falls into segment 2; the loop returns the count.
func dispatchLoop(back ...byte) []byte {
	if back == nil {
		back = []byte{0x41, 0x00}
	}
	body := []byte{
		0x01, 0x02, 0x7F, // locals 1 ($pc) and 2 (count)
		0x02, 0x40, 0x03, 0x40, // block, loop
		0x02, 0x40, 0x02, 0x40, 0x02, 0x40, // three segment blocks
		0x20, 0x01, 0x0E, 0x03, 0x00, 0x01, 0x02, 0x02, // br_table $pc: 0 1 2, default 2
		0x0B,                         // segment 0:
		0x20, 0x00, 0x45, 0x0D, 0x03, // n == 0: leave
		0x20, 0x00, 0x41, 0x01, 0x6B, 0x21, 0x00, // n--
		0x20, 0x02, 0x41, 0x01, 0x6A, 0x21, 0x02, // count++
		0x41, 0x02, 0x21, 0x01, 0x0C, 0x02, // to segment 2
		0x0B,                                           // segment 1:
		0x20, 0x02, 0x41, 0xE4, 0x00, 0x6A, 0x21, 0x02, // count += 100
		0x0B, // segment 2:
	}
	body = append(body, back...)
	return append(body,
		0x21, 0x01, 0x0C, 0x00, // $pc = back; br loop
		0x0B, 0x0B, // end loop, end block
		0x20, 0x02, 0x0B) // count, end
}

// A dispatch loop is checked at its backward jumps, not at its header (nor
// on entry: this function calls nothing, so it has no entry check): the
// forward jump of each iteration costs no fuel, so the check runs once per
// fuel iterations, not once per fuel/2. Jumps that
// only look forward are checked: to an earlier segment, or to an index
// past the table (its default), either of which can loop forever.
func TestRewriteDispatchLoops(t *testing.T) {
	const fuel = 100
	for _, n := range []uint32{0, 1, fuel - 1, fuel, 10*fuel + 3} {
		got, calls, err := run(t, loopModule(dispatchLoop()), fuel, -1, n)
		if err != nil || got != n {
			t.Fatalf("loop(%d) = %d, %v", n, got, err)
		}
		if want := int(n) / fuel; calls != want {
			t.Errorf("loop(%d): %d checks, want %d (one per backward jump)", n, calls, want)
		}
	}
	for name, back := range map[string][]byte{
		"to an earlier segment":      {0x41, 0x01},             // segment 1, which falls into 2
		"past the table":             {0x41, 0x07},             // the default: segment 2 again
		"from a computed index":      {0x20, 0x01},             // local.get $pc, not a constant
		"with a negative index":      {0x41, 0x7F},             // -1
		"to the same segment":        {0x41, 0x02},             // segment 2 again
		"to the same segment by tee": {0x41, 0x02, 0x22, 0x01}, // i32.const 2, local.tee $pc
	} {
		if _, calls, err := run(t, loopModule(dispatchLoop(back...)), fuel, 3, 1); err == nil || calls != 3 {
			t.Errorf("a backward jump %s: %d checks, err %v; want the third check to stop it", name, calls, err)
		}
	}
	// Segment 0's jump looks forward (i32.const 2, then br to the loop)
	// but sets another local than $pc, so it goes back to segment 0: it
	// must be checked, or this loop would run 1000 iterations unchecked.
	fwd := []byte{0x41, 0x02, 0x21, 0x01, 0x0C, 0x02}
	other := []byte{0x41, 0x02, 0x21, 0x03, 0x0C, 0x02} // local.set 3, not $pc
	body := dispatchLoop()
	if !bytes.Contains(body, fwd) {
		t.Fatal("dispatchLoop no longer has its forward jump")
	}
	body = bytes.Replace(body, fwd, other, 1)
	body[1] = 0x03 // three i32 locals: $pc, count, and the other
	if _, calls, err := run(t, loopModule(body), fuel, 3, 10*fuel); err == nil || calls != 3 {
		t.Errorf("a jump that sets another local than $pc: %d checks, err %v; want the third check to stop it", calls, err)
	}
}

// A function laid out as a dispatch loop that recurses without ever
// jumping back (here f(n) calls f(n-1) twice: 2^40 calls for n = 40) is
// checked on every entry, as Go functions were when every loop header had
// a check; otherwise it would run for hours past any deadline.
func TestRewriteDispatchRecursion(t *testing.T) {
	body := []byte{
		0x01, 0x01, 0x7F, // local 1: $pc
		0x03, 0x40, 0x02, 0x40, // loop, one segment block
		0x20, 0x01, 0x0E, 0x01, 0x00, 0x00, // br_table $pc: 0, default 0
		0x0B,                                                 // segment 0:
		0x20, 0x00, 0x45, 0x04, 0x40, 0x41, 0x00, 0x0F, 0x0B, // n == 0: return 0
		0x20, 0x00, 0x41, 0x01, 0x6B, 0x10, 0x00, 0x1A, // f(n-1)
		0x20, 0x00, 0x41, 0x01, 0x6B, 0x10, 0x00, 0x1A, // f(n-1)
		0x41, 0x01, 0x0F, // return 1
		0x0B,             // end loop
		0x41, 0x00, 0x0B, // 0, end
	}
	if _, calls, err := run(t, loopModule(body), 100, 3, 40); err == nil || calls != 3 {
		t.Fatalf("recursion: %d checks, err %v; want the third check to stop it", calls, err)
	}
}

// The Go guest's "events"(n) records n counter increments through a
// counter interface (tapes.CounterHandle's methods): each event is one iteration of a Go loop
// (a forward and a backward jump through its function's dispatch loop)
// and one call (Inc, dynamic, so not inlined). It pays two fuel checks:
// the backward jump and the callee's entry. With a check at every loop
// header, as before dispatch loops were recognised, it paid three (two
// header passes and the entry); were the recognition lost (a new Go
// compiler laying functions out otherwise), this would read three again.
func TestRewriteGoGuestChecksPerEvent(t *testing.T) {
	// Built from source: the count follows the SDK, not the committed copy.
	wasm := builds.Bytes(t, "goguest.wasm", testenv.GoWasm(".", "./hostabi/testdata/goguest", "c-shared"))
	out, err := Rewrite(wasm, check, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	cm, err := rt.CompileModule(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	checks := 0
	host := rt.NewHostModuleBuilder(check.Module)
	host.NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, s []uint64) {
		checks++
		s[0] = 1
	}), nil, []api.ValueType{api.ValueTypeI32}).Export(check.Name)
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		if mod != check.Module || name == check.Name {
			continue
		}
		// The guest's other imports (define, batch, ...) succeed and
		// return 0: this test counts checks, not metrics.
		host.NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, s []uint64) {
			if len(s) > 0 {
				s[0] = 0
			}
		}), f.ParamTypes(), f.ResultTypes()).Export(name)
	}
	if _, err := host.Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
	if err != nil {
		t.Fatal(err)
	}
	count := func(n uint64) int {
		checks = 0
		if _, err := m.ExportedFunction("events").Call(ctx, n); err != nil {
			t.Fatal(err)
		}
		return checks
	}
	count(100) // the first call sets up the guest's handles
	const n = 20000
	per := float64(count(2*n)-count(n)) / n
	if per < 1.9 || per > 2.1 {
		t.Fatalf("%.2f fuel checks per event, want 2", per)
	}
}
