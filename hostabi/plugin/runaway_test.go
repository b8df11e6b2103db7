package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/tapes-go/tapes/hostabi/internal/interrupt"
	"github.com/tapes-go/tapes/hostabi/plugin"
	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tapes-go/tapes/registry"
)

// Guests that run until something stops them (issue 13, items 1, 2 and 5),
// each in-process under New's CallTimeout: every call must end with
// a deadline exit within the timeout plus a bound, or the module must be
// refused by New. Without the rewriter's function-entry checks,
// length charges, exact decoding and batch's own context check, each of
// them ran for seconds to forever past the deadline (and froze the
// process at the next collection).

const (
	runawayTimeout = 300 * time.Millisecond
	// runawayBound is how far past the deadline a call may end: generous,
	// for a loaded machine and the race detector. The slowest single step
	// here (a 64 MiB memory.fill, or a batch chunk) takes milliseconds.
	runawayBound = 3 * time.Second
	// runawayWatchdog ends the test binary if a call has not returned by
	// then: a guest that is never interrupted cannot be stopped any other
	// way, and the next collection would freeze the process.
	runawayWatchdog = 60 * time.Second
)

// uleb is n as an unsigned LEB128 number.
func uleb(n int) []byte {
	var b []byte
	for {
		c := byte(n & 0x7F)
		n >>= 7
		if n == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// wasmSection is a section with its id and size.
func wasmSection(id byte, payload ...byte) []byte {
	return append(append([]byte{id}, uleb(len(payload))...), payload...)
}

// wasmModule assembles a binary module from sections.
func wasmModule(sections ...[]byte) []byte {
	m := []byte{0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00}
	for _, s := range sections {
		m = append(m, s...)
	}
	return m
}

// wasmCode is a code section of one body (locals and instructions).
func wasmCode(body ...byte) []byte {
	return wasmSection(10, append(append([]byte{0x01}, uleb(len(body))...), body...)...)
}

// wasmExport exports function 0 as name.
func wasmExport(name string) []byte {
	return wasmSection(7, append(append([]byte{0x01}, uleb(len(name))...), append([]byte(name), 0x00, 0x00)...)...)
}

var (
	voidTypes = func(n int) []byte { // n types () -> ()
		p := uleb(n)
		for range n {
			p = append(p, 0x60, 0x00, 0x00)
		}
		return wasmSection(1, p...)
	}
	oneFunc = wasmSection(3, 0x01, 0x00) // function 0 of type 0
	// recType is type 0: (i32) -> (), the recursions' type.
	recType = wasmSection(1, 0x01, 0x60, 0x01, 0x7F, 0x00)
)

// halves is f(d) { if d == 0 return; f(d-1); f(d-1) }: 2^d calls, no loop.
// call is the call of f: "call 0", or "i32.const 0; call_indirect" through
// a table holding f.
func halves(call ...byte) []byte {
	body := []byte{0x00, 0x20, 0x00, 0x45, 0x04, 0x40, 0x0F, 0x0B} // no locals; if d == 0: return
	for range 2 {
		body = append(body, 0x20, 0x00, 0x41, 0x01, 0x6B) // d-1
		body = append(body, call...)
	}
	return append(body, 0x0B)
}

var runaways = []struct {
	name   string
	wasm   func(t *testing.T) []byte
	export string
	params []uint64
	pages  uint32
	// refused: New must refuse the module (an encoding the
	// rewriter does not model); wazero itself accepts it.
	refused string
}{
	{
		// wazero reads the local's type (ref null 2) as 0x63 0x02; the
		// rewriter read 0x63 alone, then "block (type 3); memory.grow;
		// unreachable; end" where wazero has "loop; br 0; end", and
		// added no check.
		name: "ref null local", export: "spin", refused: "value type 0x63",
		wasm: func(*testing.T) []byte {
			return wasmModule(voidTypes(4), oneFunc, wasmExport("spin"),
				wasmCode(0x01, 0x01, 0x63, 0x02, 0x03, 0x40, 0x0C, 0x00, 0x0B, 0x0B))
		},
	},
	{
		// select with the type (ref null func), written 0x63 0x70.
		name: "select t* of a ref type", export: "spin", refused: "value type 0x63",
		wasm: func(*testing.T) []byte {
			return wasmModule(voidTypes(1), oneFunc, wasmExport("spin"), wasmCode(0x00,
				0xD0, 0x70, 0xD0, 0x70, 0x41, 0x00, 0x1C, 0x01, 0x63, 0x70, 0x1A, // select (ref null func); drop
				0x03, 0x40, 0x0C, 0x00, 0x0B, 0x0B))
		},
	},
	{
		// A global of type (ref null func).
		name: "ref-typed global", export: "spin", refused: "value type 0x63",
		wasm: func(*testing.T) []byte {
			return wasmModule(voidTypes(1), oneFunc,
				wasmSection(6, 0x01, 0x63, 0x70, 0x00, 0xD0, 0x70, 0x0B),
				wasmExport("spin"), wasmCode(0x00, 0x03, 0x40, 0x0C, 0x00, 0x0B, 0x0B))
		},
	},
	{
		name: "recursion", export: "rec", params: []uint64{60},
		wasm: func(*testing.T) []byte {
			return wasmModule(recType, oneFunc, wasmExport("rec"), wasmCode(halves(0x10, 0x00)...))
		},
	},
	{
		name: "indirect recursion", export: "rec", params: []uint64{60},
		wasm: func(*testing.T) []byte {
			return wasmModule(recType, oneFunc,
				wasmSection(4, 0x01, 0x70, 0x00, 0x01), // a table of one funcref
				wasmExport("rec"),
				wasmSection(9, 0x01, 0x00, 0x41, 0x00, 0x0B, 0x01, 0x00), // table[0] = f
				wasmCode(halves(0x41, 0x00, 0x11, 0x00, 0x00)...))
		},
	},
	{
		name: "fib(90) from C at -O0", export: "fib", params: []uint64{90},
		wasm: func(t *testing.T) []byte { return cGuestO0(t, "runaway") },
	},
	{
		// Each iteration fills all 64 MiB: one loop iteration's fuel,
		// where 4096 of them took minutes.
		name: "memory.fill loop", export: "spin", pages: 1024,
		wasm: func(*testing.T) []byte {
			return wasmModule(voidTypes(1), oneFunc,
				wasmSection(5, 0x01, 0x00, 0x80, 0x08), // memory of 1024 pages
				wasmExport("spin"), wasmCode(0x00,
					0x03, 0x40, // loop
					0x41, 0x00, 0x41, 0x00, 0x41, 0x80, 0x80, 0x80, 0x20, // 0, 0, 64 MiB
					0xFC, 0x0B, 0x00, // memory.fill
					0x0C, 0x00, 0x0B, 0x0B))
		},
	},
	{
		// Each iteration fills all 64 MiB with random bytes through WASI
		// (~0.1-0.3 s a call): a host call is one instruction to the
		// fuel, unless the rewrite charges it.
		name: "random_get loop", export: "spin", pages: 1024,
		wasm: func(*testing.T) []byte {
			return wasmModule(
				wasmSection(1, 0x02, 0x60, 0x00, 0x00, 0x60, 0x02, 0x7F, 0x7F, 0x01, 0x7F), // () -> (); (i32, i32) -> i32
				wasmSection(2, append(append([]byte{0x01, 22}, "wasi_snapshot_preview1"...), append([]byte{10}, append([]byte("random_get"), 0x00, 0x01)...)...)...),
				wasmSection(3, 0x01, 0x00), // function 1 of type 0
				wasmSection(5, 0x01, 0x00, 0x80, 0x08),
				wasmSection(7, 0x01, 0x04, 's', 'p', 'i', 'n', 0x00, 0x01),
				wasmCode(0x00,
					0x03, 0x40, // loop
					0x41, 0x00, 0x41, 0x80, 0x80, 0x80, 0x20, 0x10, 0x00, 0x1A, // random_get(0, 64 MiB); drop
					0x0C, 0x00, 0x0B, 0x0B))
		},
	},
	{
		// Each iteration sends all 64 MiB of memory as one batch (4M
		// records, all rejected): one loop iteration to the fuel.
		name: "large batch loop", export: "batch_all", params: []uint64{1024}, pages: 1024,
		wasm: func(t *testing.T) []byte { return cGuestO0(t, "runaway") },
	},
}

func TestRunawayGuestsStopAtTheDeadline(t *testing.T) {
	ctx := context.Background()
	for _, c := range runaways {
		t.Run(c.name, func(t *testing.T) {
			wasm := c.wasm(t)
			if c.refused != "" {
				// The attack is real: wazero, with the features New
				// enables, accepts the module.
				if err := wazeroCompile(wasm); err != nil {
					t.Fatalf("wazero refuses the module (%v); the case tests nothing", err)
				}
			}
			pages := c.pages
			if pages == 0 {
				pages = 16
			}
			p, err := plugin.New(ctx, plugin.Config{
				Name: "runaway", Wasm: wasm, Registry: registry.New(), Prefix: "plugins.runaway",
				CallTimeout: runawayTimeout, MemoryLimitPages: pages, Cache: testCache,
			})
			if c.refused != "" {
				if err == nil {
					defer p.Close(ctx)
					stops(t, p, c.export, c.params...) // shows what accepting it costs
					t.Fatalf("New accepted the module (interrupt mode %q)", p.Stats().Interrupt)
				}
				if !strings.Contains(err.Error(), c.refused) {
					t.Fatalf("New: %v, want it refused for %q", err, c.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close(ctx)
			if m := p.Stats().Interrupt; m != plugin.InterruptFuel {
				t.Fatalf("interrupt mode %q, want %q", m, plugin.InterruptFuel)
			}
			stops(t, p, c.export, c.params...)
			// The plugin serves the next call with a fresh instance,
			// which is stopped the same way.
			stops(t, p, c.export, c.params...)
			if st := p.Stats(); st.Timeouts != 2 || st.Replaced != 2 {
				t.Errorf("stats %+v, want 2 timeouts and 2 replaced instances", st)
			}
		})
	}
}

// wazeroCompile compiles wasm with the features New enables, and
// reports wazero's error, nil if it accepts the module, and nil too if its
// compiler panics: wazero 1.12's validator reads "select (ref null func)"
// (0x1C 0x01 0x63 0x70) as one instruction, and its compiler skips two
// bytes of it and reads 0x70 as an instruction, then panics (index out of
// range) in the caller's goroutine.
func wazeroCompile(wasm []byte) (err error) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCoreFeatures(interrupt.CoreFeatures))
	defer rt.Close(ctx)
	defer func() {
		if recover() != nil {
			err = nil
		}
	}()
	_, err = rt.CompileModule(ctx, wasm)
	return err
}

// stops calls export and requires it to end with a deadline exit within
// the plugin's timeout plus runawayBound.
func stops(t *testing.T, p *plugin.Plugin, export string, params ...uint64) {
	t.Helper()
	watchdog := time.AfterFunc(runawayWatchdog, func() {
		panic(fmt.Sprintf("%s: %s ran %v past a %v deadline; nothing stops it", t.Name(), export, runawayWatchdog, runawayTimeout))
	})
	defer watchdog.Stop()
	start := time.Now()
	_, err := p.Call(context.Background(), export, params...)
	took := time.Since(start)
	if !isDeadline(err) {
		t.Fatalf("%s returned %v after %v, want a deadline exit", export, err, took)
	}
	if took > runawayTimeout+runawayBound {
		t.Errorf("%s ended %v after its start, past the %v deadline plus %v", export, took, runawayTimeout, runawayBound)
	}
}

// cGuestO0 builds hostabi/testdata/<name>.c as a wasm32-wasi reactor at
// -O0 (testenv.WasiC builds at -O2, where clang may turn recursion into
// loops).
func cGuestO0(t *testing.T, name string) []byte {
	t.Helper()
	clang := testenv.WasiClang(t)
	return builds.Bytes(t, "c-O0-"+name+".wasm", func(out string) error {
		root := testenv.RepoRoot()
		cmd := exec.Command(clang, "--target=wasm32-wasi", "-O0", "-mexec-model=reactor",
			"-I", filepath.Join(root, "guest", "c"), "-o", out, filepath.Join(root, "hostabi", "testdata", name+".c"))
		if b, err := cmd.CombinedOutput(); err != nil {
			return errors.New(cmd.String() + ": " + err.Error() + "\n" + string(b))
		}
		return nil
	})
}
