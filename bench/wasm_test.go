package bench

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapes-go/tapes/hostabi/plugin"
	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tapes-go/tapes/registry"
)

// goWasm builds the Go package pkg of the module in dir (both relative to
// the repository root) as a wasip1 c-shared reactor.
func goWasm(tb testing.TB, dir, pkg string) []byte {
	return builds.Bytes(tb, "go-"+filepath.Base(pkg)+".wasm", testenv.GoWasm(dir, "./"+pkg, "c-shared"))
}

// cWasm builds a C file (relative to the repository root) as a wasm32-wasi
// reactor with guest/c on the include path.
func cWasm(tb testing.TB, file string) []byte {
	return builds.Bytes(tb, "c-"+filepath.Base(file)+".wasm", testenv.WasiC(testenv.WasiClang(tb), file, true))
}

// benchPlugin runs wasm with the plugin runner; noInterrupt drops the
// deadline checks (see plugin.Config.NoInterrupt). Compiled code is
// shared through one on-disk cache per benchmark binary.
func benchPlugin(b *testing.B, name string, wasm []byte, r *registry.Registry, noInterrupt bool) *plugin.Plugin {
	b.Helper()
	ctx := context.Background()
	p, err := plugin.New(ctx, plugin.Config{
		Name: name, Wasm: wasm, Registry: r, Prefix: "plugins." + name,
		CacheDir: filepath.Join(builds.Dir(b), "cache"), NoInterrupt: noInterrupt,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close(ctx) })
	return p
}

// BenchmarkWasmEvents measures one counter increment recorded by a guest:
// buffered by the SDK and sent in batches (the recommended path: "batched"
// increments one counter, "mixed" alternates two; the host sums a batch's
// records per counter, so both cost one atomic add per counter and batch),
// or with one host call per event ("direct"). Each op is one call into the
// guest recording perCall events, then the runner's flush; ns/event (wall)
// and cpu-ns/event (the benchmark thread's CPU time, steadier on a shared
// machine) are the figures to read. "-nointerrupt" variants run without
// the deadline checks (plugin.Config.NoInterrupt).
func BenchmarkWasmEvents(b *testing.B) {
	const perCall = 10000
	guests := []struct {
		name string
		wasm func(testing.TB) []byte
	}{
		{"go", func(tb testing.TB) []byte { return goWasm(tb, "bench", "testdata/wasm/goguest") }},
		{"c", func(tb testing.TB) []byte { return cWasm(tb, "bench/testdata/wasm/cguest.c") }},
	}
	for _, g := range guests {
		for _, mode := range []string{"batched", "mixed", "direct", "batched-nointerrupt", "mixed-nointerrupt", "direct-nointerrupt"} {
			b.Run(g.name+"/"+mode, func(b *testing.B) {
				r := registry.New()
				p := benchPlugin(b, g.name, g.wasm(b), r, strings.HasSuffix(mode, "-nointerrupt"))
				export := "record"
				switch {
				case strings.HasPrefix(mode, "direct"):
					export = "record_direct"
				case strings.HasPrefix(mode, "mixed"):
					export = "record_mixed"
				}
				ctx := context.Background()
				defer lockThread()()
				b.ResetTimer()
				cpu := threadCPU()
				for i := 0; i < b.N; i++ {
					if _, err := p.Call(ctx, export, perCall); err != nil {
						b.Fatal(err)
					}
				}
				cpu = threadCPU() - cpu
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perCall), "ns/event")
				if cpu > 0 {
					b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*perCall), "cpu-ns/event")
				}
				var total int64
				for _, name := range []string{"events", "other"} {
					if c, ok := r.Get("plugins." + g.name + ".bench." + g.name + "." + name); ok {
						total += c.(*registry.Counter).Value()
					}
				}
				if total != int64(b.N*perCall) {
					b.Fatalf("counters add up to %d, want %d", total, b.N*perCall)
				}
			})
		}
	}
}

// BenchmarkWasmEventsPaired runs the Go and the C guest's batched loops
// (as in BenchmarkWasmEvents) in turns, one call each per op, on one
// thread, and reports each one's CPU per event and their ratio. This
// machine's speed changes from one second to the next (its busy spells
// nearly double every row above), and separate sub-benchmarks land in
// different spells; paired calls share them, so the ratio holds still
// where the rows do not (go/c read 1.19-1.26 over 200 pairs or more,
// both at 6.5/5.4 and at 12/10 ns per event).
func BenchmarkWasmEventsPaired(b *testing.B) {
	const perCall = 10000
	rg, rc := registry.New(), registry.New()
	guests := []*plugin.Plugin{
		benchPlugin(b, "go", goWasm(b, "bench", "testdata/wasm/goguest"), rg, false),
		benchPlugin(b, "c", cWasm(b, "bench/testdata/wasm/cguest.c"), rc, false),
	}
	ctx := context.Background()
	defer lockThread()()
	var cpu [2]time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, p := range guests {
			t0 := threadCPU()
			if _, err := p.Call(ctx, "record", perCall); err != nil {
				b.Fatal(err)
			}
			cpu[j] += threadCPU() - t0
		}
	}
	b.StopTimer()
	events := float64(b.N * perCall)
	if cpu[0] > 0 && cpu[1] > 0 {
		b.ReportMetric(float64(cpu[0].Nanoseconds())/events, "go-cpu-ns/event")
		b.ReportMetric(float64(cpu[1].Nanoseconds())/events, "c-cpu-ns/event")
		b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "go/c")
	}
	for name, r := range map[string]*registry.Registry{"go": rg, "c": rc} {
		if v := r.Counter("plugins." + name + ".bench." + name + ".events").Value(); v != int64(b.N*perCall) {
			b.Fatalf("%s counter = %d, want %d", name, v, b.N*perCall)
		}
	}
}

// BenchmarkWasmCalibrate is the machine's yardstick for the numbers above:
// one atomic add on a registry counter (~2.2 ns on a quiet machine of the
// project's kind). On a shared, loaded machine, compare against it.
func BenchmarkWasmCalibrate(b *testing.B) {
	c := registry.New().Counter("c")
	defer lockThread()()
	cpu := threadCPU()
	for i := 0; i < b.N; i++ {
		c.Add(1)
	}
	if cpu = threadCPU() - cpu; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkWasmCall measures a call into a guest function that does nothing,
// through the plugin runner (pool, flush export).
func BenchmarkWasmCall(b *testing.B) {
	for _, g := range []struct {
		name string
		wasm func(testing.TB) []byte
	}{
		{"go", func(tb testing.TB) []byte { return goWasm(tb, "bench", "testdata/wasm/goguest") }},
		{"c", func(tb testing.TB) []byte { return cWasm(tb, "bench/testdata/wasm/cguest.c") }},
	} {
		b.Run(g.name, func(b *testing.B) {
			p := benchPlugin(b, g.name, g.wasm(b), registry.New(), false)
			ctx := context.Background()
			defer lockThread()()
			b.ResetTimer()
			cpu := threadCPU()
			for i := 0; i < b.N; i++ {
				if _, err := p.Call(ctx, "noop"); err != nil {
					b.Fatal(err)
				}
			}
			if cpu = threadCPU() - cpu; cpu > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}
		})
	}
}

// BenchmarkWasmStart measures New for the Go example plugin with a
// warm on-disk compilation cache: compile (from the cache) plus the first
// instance. compile-ms and start-ms report the two parts; ns/op and
// cpu-ms/op also count closing the plugin.
func BenchmarkWasmStart(b *testing.B) {
	wasm := goWasm(b, ".", "examples/plugin-go")
	dir := b.TempDir()
	ctx := context.Background()
	open := func() *plugin.Plugin {
		p, err := plugin.New(ctx, plugin.Config{
			Name: "example", Wasm: wasm, Registry: registry.New(), Prefix: "plugins.example", CacheDir: dir,
		})
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	cold := open() // fills the cache
	coldCompile := cold.Stats().Compile
	cold.Close(ctx)
	var compile, start time.Duration
	defer lockThread()()
	b.ResetTimer()
	cpu := threadCPU()
	for i := 0; i < b.N; i++ {
		p := open()
		st := p.Stats()
		compile += st.Compile
		start += st.InstanceStart
		p.Close(ctx)
	}
	if cpu = threadCPU() - cpu; cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
	}
	b.ReportMetric(float64(coldCompile.Microseconds())/1000, "cold-compile-ms")
	b.ReportMetric(float64(compile.Microseconds())/1000/float64(b.N), "compile-ms")
	b.ReportMetric(float64(start.Microseconds())/1000/float64(b.N), "start-ms")
}
