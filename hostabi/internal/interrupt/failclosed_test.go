package interrupt

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

type namedModule struct {
	name string
	wasm []byte
	want string // what the refusal says
}

var (
	voidType  = vec(secType, 1, 0x60, 0x00, 0x00) // type 0: () -> ()
	oneFunc   = vec(secFunction, 1, 0x00)
	spinBody  = []byte{0x03, 0x40, 0x0C, 0x00, 0x0B, 0x0B} // loop; br 0; end; end
	withLocal = func(local ...byte) []byte { return append(append([]byte{0x01, 0x01}, local...), spinBody...) }
)

// refusedModules are modules wazero 1.12 accepts with CoreFeatures (or
// panics on) whose encodings the rewriter does not model: it refuses them
// outright, not as ErrUnsupported, so they never run.
func refusedModules() []namedModule {
	voidTypes4 := vec(secType, 4, 0x60, 0x00, 0x00, 0x60, 0x00, 0x00, 0x60, 0x00, 0x00, 0x60, 0x00, 0x00)
	return []namedModule{
		// wazero reads (ref null 2) as 0x63 0x02; read as one byte, the
		// body became "block (type 3); memory.grow; unreachable; end",
		// where wazero runs "loop; br 0; end": no check, no deadline.
		{"ref null local", assemble(voidTypes4, oneFunc, code([]byte{0x01, 0x01, 0x63, 0x02, 0x03, 0x40, 0x0C, 0x00, 0x0B, 0x0B})), "value type 0x63"},
		{"(ref null func) local", assemble(voidType, oneFunc, code(withLocal(0x63, 0x70))), "value type 0x63"},
		{"exnref local", assemble(voidType, oneFunc, code(withLocal(0x69))), "value type 0x69"},
		// wazero's validator reads the type as 0x63 0x70; its compiler
		// skips two bytes and panics on what follows.
		{"select (ref null func)", assemble(voidType, oneFunc, code([]byte{0x00,
			0xD0, 0x70, 0xD0, 0x70, 0x41, 0x00, 0x1C, 0x01, 0x63, 0x70, 0x1A, 0x03, 0x40, 0x0C, 0x00, 0x0B, 0x0B})), "value type 0x63"},
		{"global of type (ref null func)", assemble(voidType, oneFunc, vec(secGlobal, 1, 0x63, 0x70, 0x00, 0xD0, 0x70, 0x0B),
			code(append([]byte{0x00}, spinBody...))), "value type 0x63"},
		{"parameter of type (ref null func)", assemble(vec(secType, 1, 0x60, 0x01, 0x63, 0x70, 0x00), oneFunc,
			code(append([]byte{0x00}, spinBody...))), "value type 0x63"},
		// Its initializer could hold a ref.func, with the index before
		// the rewrite.
		{"table with an initializer", assemble(voidType, oneFunc, vec(secTable, 1, 0x40, 0x00, 0x70, 0x00, 0x01, 0xD0, 0x70, 0x0B),
			code(append([]byte{0x00}, spinBody...))), "reference type 0x40"},
		// A rec group of two types: wazero counts two, a reader of
		// function types one.
		{"rec group", assemble(vec(secType, 1, 0x4E, 0x02, 0x60, 0x00, 0x00, 0x60, 0x00, 0x00), oneFunc,
			code(append([]byte{0x00}, spinBody...))), "type form 0x4e"},
		{"block type (ref null func)", assemble(voidType, oneFunc, code([]byte{0x00, 0x02, 0x63, 0x70, 0xD0, 0x70, 0x0B, 0x1A, 0x0B})), "block type"},
		{"ref.null exn", assemble(voidType, oneFunc, code([]byte{0x00, 0xD0, 0x69, 0x1A, 0x0B})), "reference type 0x69"},
		// wazero stops reading a block type after five bytes even when
		// the fifth says more follow.
		{"block type of five bytes and more", assemble(voidType, oneFunc, code([]byte{0x00, 0x02, 0x80, 0x80, 0x80, 0x80, 0x80, 0x0B, 0x0B})), "LEB128"},
	}
}

// unsupportedModules use opcodes of proposals outside CoreFeatures:
// ErrUnsupported, and wazero refuses them too.
func unsupportedModules() []namedModule {
	memory := vec(secMemory, 1, 0x00, 0x01)
	body := func(b ...byte) []byte { return code(append(append([]byte{0x00}, b...), 0x0B)) }
	return []namedModule{
		{"atomic.fence", assemble(voidType, oneFunc, body(0xFE, 0x03, 0x00)), "0xfe"},
		{"atomic load", assemble(voidType, oneFunc, memory, body(0x41, 0x00, 0xFE, 0x10, 0x02, 0x00, 0x1A)), "0xfe"},
		{"return_call", assemble(voidType, oneFunc, body(0x12, 0x00)), "0x12"},
		{"call_ref", assemble(voidType, oneFunc, body(0xD2, 0x00, 0x14, 0x00)), "0x14"},
		{"try_table", assemble(voidType, oneFunc, body(0x1F, 0x40, 0x00, 0x0B)), "0x1f"},
		{"throw", assemble(voidType, oneFunc, body(0x08, 0x00)), "0x8"},
		{"ref.as_non_null", assemble(voidType, oneFunc, body(0xD0, 0x70, 0xD3, 0x1A)), "0xd3"},
		{"misc opcode 18", assemble(voidType, oneFunc, body(0xFC, 0x12)), "0xFC 18"},
	}
}

// wazeroVerdict compiles wasm with CoreFeatures: nil if wazero accepts it
// or panics on it (wazero 1.12's compiler does on some modules its
// validator accepts), its error otherwise.
func wazeroVerdict(wasm []byte) (err error) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCoreFeatures(CoreFeatures))
	defer rt.Close(ctx)
	defer func() {
		if recover() != nil {
			err = nil
		}
	}()
	_, err = rt.CompileModule(ctx, wasm)
	return err
}

func TestRewriteRefusesUnmodeledEncodings(t *testing.T) {
	for _, c := range refusedModules() {
		if err := wazeroVerdict(c.wasm); err != nil {
			t.Errorf("%s: wazero refuses the module (%v); the case tests nothing", c.name, err)
			continue
		}
		_, err := Rewrite(c.wasm, check, 7)
		if err == nil || errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Rewrite = %v, want it refused (not ErrUnsupported) saying %q", c.name, err, c.want)
		}
	}
}

// ErrUnsupported lets a caller fall back to wazero's checks, which miss
// recursion: it is only returned for what wazero refuses anyway.
func TestRewriteUnsupportedIsRefusedByWazero(t *testing.T) {
	for _, c := range unsupportedModules() {
		if _, err := Rewrite(c.wasm, check, 7); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Rewrite = %v, want ErrUnsupported saying %q", c.name, err, c.want)
		}
		if err := wazeroVerdict(c.wasm); err == nil {
			t.Errorf("%s: wazero with CoreFeatures accepts the module", c.name)
		}
	}
}

// recursion is f(n) { if n == 0 return 0; f(n-1); f(n-1); return 1 }, a
// loopModule body: 2^n calls, no loop.
var recursion = []byte{
	0x00,
	0x20, 0x00, 0x45, 0x04, 0x40, 0x41, 0x00, 0x0F, 0x0B, // n == 0: return 0
	0x20, 0x00, 0x41, 0x01, 0x6B, 0x10, 0x00, 0x1A, // f(n-1)
	0x20, 0x00, 0x41, 0x01, 0x6B, 0x10, 0x00, 0x1A, // f(n-1)
	0x41, 0x01, 0x0B, // 1, end
}

// A function that calls is checked at every entry: a call tree without a
// loop spends fuel per call (2^(n+1)-1 calls for f(n)), and f(40) is
// stopped by the third check.
func TestRewriteChecksFunctionEntry(t *testing.T) {
	const fuel = 100
	for _, n := range []uint32{0, 1, 5, 10} {
		_, calls, err := run(t, loopModule(recursion), fuel, -1, n)
		if err != nil {
			t.Fatal(err)
		}
		if want := (1<<(n+1) - 1) / fuel; calls != want {
			t.Errorf("f(%d): %d checks, want %d", n, calls, want)
		}
	}
	if _, calls, err := run(t, loopModule(recursion), fuel, 3, 40); err == nil || calls != 3 {
		t.Fatalf("f(40): %d checks, err %v; want the third check to stop it", calls, err)
	}
}

// A bulk instruction charges fuel by its length (memory: 1 per 64 bytes):
// "loop"(n) fills n bytes once, and a fill longer than the fuel's worth
// calls the check at once.
func TestRewriteChargesBulkInstructions(t *testing.T) {
	body := []byte{
		0x00,
		0x41, 0x00, 0x41, 0x00, 0x20, 0x00, 0xFC, 0x0B, 0x00, // memory.fill(0, 0, n)
		0x20, 0x00, 0x0B, // n, end
	}
	wasm := loopModule(body)
	// A memory of 2 pages, between the function and export sections.
	wasm = append(wasm[:20:20], append([]byte{secMemory, 0x03, 0x01, 0x00, 0x02}, wasm[20:]...)...)
	const fuel = 100
	for _, c := range []struct{ n, checks uint32 }{
		{0, 0}, {64*fuel - 1, 0}, {64 * fuel, 1}, {100000, 1},
	} {
		got, calls, err := run(t, wasm, fuel, -1, c.n)
		if err != nil || got != c.n {
			t.Fatalf("fill(%d) = %d, %v", c.n, got, err)
		}
		if calls != int(c.checks) {
			t.Errorf("fill(%d): %d checks, want %d", c.n, calls, c.checks)
		}
	}
}

// wazero reads a vector instruction's sub-opcode as one byte: the
// specification's encoding of i16x8.abs (128) as 0xFD 0x80 0x01 is
// i16x8.abs and a nop to it. The rewriter reads it the same way, and the
// loop that follows is checked.
func TestRewriteVectorOpcodesAreOneByte(t *testing.T) {
	body := []byte{0x01, 0x01, 0x7F, 0xFD, 0x0C} // one i32 local; v128.const 0
	body = append(body, make([]byte, 16)...)
	body = append(body, 0xFD, 0x80, 0x01, 0x1A) // i16x8.abs (nop); drop
	// countdown's block and loop, and its result.
	body = append(body, countdown[len(countdown)-30:]...)
	wasm := loopModule(body)
	if err := wazeroVerdict(wasm); err != nil {
		t.Fatalf("wazero refuses the module: %v", err)
	}
	got, calls, err := run(t, wasm, 10, -1, 100)
	if err != nil || got != 100 || calls != 10 {
		t.Fatalf("loop(100) = %d, %d checks, %v; want 100, 10 checks", got, calls, err)
	}
}

// FuzzTermination: a module of random control flow (nested blocks, loops
// and ifs, br, br_if and br_table to any label, direct, recursive and
// indirect calls, returns, bulk memory fills), valid by construction, is
// rewritten, compiled without wazero's own checks and called with a short
// deadline: every call must end within the deadline plus a bound, by
// returning, trapping (stack overflow) or being stopped by the check.
func FuzzTermination(f *testing.F) {
	f.Add([]byte{0, 1, 1, 3, 0})                // a loop that branches to itself
	f.Add([]byte{1, 6, 0, 6, 0})                // recursion, twice per call
	f.Add([]byte{1, 7, 0, 7, 1, 1, 6, 0, 6, 1}) // indirect recursion
	f.Add([]byte{0, 1, 5, 0, 2, 0, 0, 0})       // a br_table loop
	f.Add([]byte{0, 1, 9, 255, 3, 0})           // a loop of memory.fill
	f.Add([]byte{2, 0, 1, 1, 2, 9, 3, 4, 3, 1, 6, 1, 11, 8, 4, 0, 7, 2, 10})
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCoreFeatures(CoreFeatures))
	defer rt.Close(ctx)
	_, err := rt.NewHostModuleBuilder(check.Module).NewFunctionBuilder().
		WithGoFunction(api.GoFunc(func(ctx context.Context, s []uint64) {
			if ctx.Err() != nil {
				panic(sys.NewExitError(sys.ExitCodeDeadlineExceeded))
			}
			s[0] = 1000
		}), nil, []api.ValueType{api.ValueTypeI32}).
		Export(check.Name).Instantiate(ctx)
	if err != nil {
		f.Fatal(err)
	}
	const deadline, bound = 5 * time.Millisecond, 5 * time.Second
	f.Fuzz(func(t *testing.T, b []byte) {
		wasm := genModule(b)
		out, err := Rewrite(wasm, check, 1000)
		if err != nil {
			t.Fatalf("Rewrite of a valid module: %v", err)
		}
		cm, err := rt.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("rewritten module does not compile: %v", err)
		}
		defer cm.Close(ctx)
		mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close(ctx)
		watchdog := time.AfterFunc(time.Minute, func() {
			panic("FuzzTermination: a call ran a minute past its deadline")
		})
		defer watchdog.Stop()
		cctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		start := time.Now()
		_, err = mod.ExportedFunction("f0").Call(cctx)
		if took := time.Since(start); took > deadline+bound {
			t.Fatalf("the call ended after %v (%v), past its %v deadline plus %v", took, err, deadline, bound)
		}
	})
}

// genModule builds a valid module from b: up to four functions of type
// () -> () (f0 exported), a table holding them all, one page of memory and
// a mutable i32 global, with bodies of random structured control flow.
func genModule(b []byte) []byte {
	g := &gen{b: b}
	nf := 1 + int(g.next()%4)
	funcs := make([]byte, nf)
	elems := []byte{0x00, 0x41, 0x00, 0x0B, byte(nf)}
	var bodies [][]byte
	for i := range nf {
		elems = append(elems, byte(i))
		g.budget = 200
		body := append([]byte{0x00}, g.stmts(0, nf)...)
		bodies = append(bodies, append(body, 0x0B))
	}
	return assemble(voidType, vec(secFunction, uint32(nf), funcs...),
		vec(secTable, 1, 0x70, 0x00, byte(nf)),
		vec(secMemory, 1, 0x00, 0x01),
		vec(secGlobal, 1, 0x7F, 0x01, 0x41, 0x00, 0x0B),
		vec(secExport, 1, 0x02, 'f', '0', 0x00, 0x00),
		vec(secElement, 1, elems...),
		code(bodies...))
}

type gen struct {
	b      []byte
	i      int
	budget int // statements left in this function
}

func (g *gen) next() byte {
	if g.i >= len(g.b) {
		return 0
	}
	c := g.b[g.i]
	g.i++
	return c
}

// cond pushes an i32 that varies as the global counts.
func (g *gen) cond() []byte {
	if c := g.next(); c&1 == 0 {
		return []byte{0x41, c >> 7} // 0 or 1
	} else {
		return []byte{0x23, 0x00, 0x41, c >> 1, 0x71} // global & c>>1
	}
}

// stmts is a sequence of statements, each leaving the stack as it found
// it, inside depth labels (the function's own is label depth).
func (g *gen) stmts(depth, nf int) []byte {
	var out []byte
	for g.budget > 0 && g.i < len(g.b) {
		g.budget--
		label := func() byte { return byte(int(g.next()) % (depth + 1)) }
		switch k := g.next() % 13; k {
		case 0, 1: // block, loop
			if depth >= 6 {
				continue
			}
			out = append(out, 0x02+k, 0x40)
			out = append(out, g.stmts(depth+1, nf)...)
			out = append(out, 0x0B)
		case 2: // if else
			if depth >= 6 {
				continue
			}
			out = append(out, g.cond()...)
			out = append(out, 0x04, 0x40)
			out = append(out, g.stmts(depth+1, nf)...)
			out = append(out, 0x05)
			out = append(out, g.stmts(depth+1, nf)...)
			out = append(out, 0x0B)
		case 3:
			out = append(out, 0x0C, label())
		case 4:
			out = append(out, g.cond()...)
			out = append(out, 0x0D, label())
		case 5:
			out = append(out, g.cond()...)
			n := g.next() % 4
			out = append(out, 0x0E, n)
			for range n + 1 {
				out = append(out, label())
			}
		case 6:
			out = append(out, 0x10, byte(int(g.next())%nf))
		case 7:
			out = append(out, 0x41, byte(int(g.next())%nf), 0x11, 0x00, 0x00)
		case 8: // the global counts up
			out = append(out, 0x23, 0x00, 0x41, 0x01, 0x6A, 0x24, 0x00)
		case 9: // memory.fill of up to 64 KiB
			n := uint32(g.next()) << 8
			out = append(out, 0x41, 0x00, 0x41, 0x00, 0x41, byte(n)|0x80, byte(n>>7)|0x80, byte(n>>14), 0xFC, 0x0B, 0x00)
		case 10:
			out = append(out, 0x0F)
		case 11:
			out = append(out, 0x01)
		case 12: // end this sequence
			return out
		}
	}
	return out
}

// hostModule is "loop"(n): n calls of the imported function
// wasi_snapshot_preview1.name (i32, i32) -> i32 with (0, len), in a loop.
func hostModule(name string, length int32) []byte {
	w := &writer{}
	w.s32(length)
	body := []byte{
		0x00,
		0x02, 0x40, 0x03, 0x40, // block, loop
		0x20, 0x00, 0x45, 0x0D, 0x01, // n == 0: leave
		0x20, 0x00, 0x41, 0x01, 0x6B, 0x21, 0x00, // n--
		0x41, 0x00, 0x41}
	body = append(body, w.b...)
	body = append(body, 0x10, 0x00, 0x1A, // f(0, len); drop
		0x0C, 0x00, 0x0B, 0x0B, 0x41, 0x00, 0x0B)
	return assemble(
		vec(secType, 2, 0x60, 0x01, 0x7F, 0x01, 0x7F, 0x60, 0x02, 0x7F, 0x7F, 0x01, 0x7F),
		vec(secImport, 1, append(append(append([]byte{0x16}, "wasi_snapshot_preview1"...), byte(len(name))), append([]byte(name), 0x00, 0x01)...)...),
		vec(secFunction, 1, 0x00),
		vec(secExport, 1, 0x04, 'l', 'o', 'o', 'p', 0x00, 0x01),
		code(body))
}

// A call of a host function outside the check's module (WASI) costs an
// eighth of the fuel, and random_get also its length: a loop of such calls
// is checked every 8 calls, and a long one at once. clock_time_get takes
// constant time and costs nothing.
func TestRewriteChargesHostCalls(t *testing.T) {
	const fuel = 800 // a call costs 100, an iteration 1
	for _, c := range []struct {
		name   string
		length int32
		n      uint32
		checks int
	}{
		// The function's entry (it calls) and each loop header cost 1.
		{"random_get", 0, 7, 0},        // 1 + 8 + 7*100 = 709
		{"random_get", 0, 8, 1},        // 810
		{"random_get", 0, 80, 10},      // 8082
		{"random_get", 64 * 698, 1, 1}, // 1 + 1 + 100 + 698 = 800 at the call
		{"random_get", 64 * 696, 1, 0}, // 1 + 2 + 100 + 696 = 799
		{"fd_write", 64 * 698, 8, 1},   // a fixed charge only: 810
		{"clock_time_get", 0, 80, 0},   // free: 1 + 81
	} {
		out, err := Rewrite(hostModule(c.name, c.length), check, fuel)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		rt := wazero.NewRuntime(ctx)
		calls := 0
		host := rt.NewHostModuleBuilder(check.Module)
		host.NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, s []uint64) {
			calls++
			s[0] = fuel
		}), nil, []api.ValueType{api.ValueTypeI32}).Export(check.Name)
		if _, err := host.Instantiate(ctx); err != nil {
			t.Fatal(err)
		}
		wasi := rt.NewHostModuleBuilder("wasi_snapshot_preview1")
		wasi.NewFunctionBuilder().WithGoFunction(api.GoFunc(func(_ context.Context, s []uint64) { s[0] = 0 }),
			[]api.ValueType{api.ValueTypeI32, api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).Export(c.name)
		if _, err := wasi.Instantiate(ctx); err != nil {
			t.Fatal(err)
		}
		mod, err := rt.Instantiate(ctx, out)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mod.ExportedFunction("loop").Call(ctx, uint64(c.n)); err != nil {
			t.Fatal(err)
		}
		rt.Close(ctx)
		if calls != c.checks {
			t.Errorf("%d calls of %s(%d): %d checks, want %d", c.n, c.name, c.length, calls, c.checks)
		}
	}
}

// A charged host function is charged at its direct calls only, so a
// reference to it, which call_indirect would use, is refused.
func TestRewriteRefusesReferencesToChargedHostFunctions(t *testing.T) {
	wasm := hostModule("random_get", 0)
	elem := vec(secElement, 1, 0x00, 0x41, 0x00, 0x0B, 0x01, 0x00) // table[0] = random_get
	table := vec(secTable, 1, 0x70, 0x00, 0x01)
	// Insert the table after the function section and the element
	// section before the code section.
	i := bytes.Index(wasm, []byte{secExport})
	j := bytes.LastIndex(wasm, []byte{secCode, byte(len(wasm) - bytes.LastIndex(wasm, []byte{secCode}) - 2)})
	with := append(append(append([]byte{}, wasm[:i]...), assemble(table)[8:]...), wasm[i:j]...)
	with = append(append(with, assemble(elem)[8:]...), wasm[j:]...)
	if err := wazeroVerdict(with); err != nil {
		t.Fatalf("wazero refuses the module: %v", err)
	}
	if _, err := Rewrite(with, check, 7); err == nil || !strings.Contains(err.Error(), "reference to imported function 0") {
		t.Fatalf("Rewrite = %v, want the reference refused", err)
	}
}
