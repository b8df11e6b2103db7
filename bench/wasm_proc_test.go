package bench

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tapes-go/tapes/hostabi/plugin"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/host"
)

// BenchmarkWasmEventsIsolation compares, in one run and on one thread, a
// guest's batched event as tapes-host records it now (the guest in a plugin
// process: no fuel checks, events into a shm ring through
// plugin.ClientSink, drained by a host on another thread) with the
// in-process runner (fuel checks, events into the registry). Each op is
// one call of each, in turns, recording perCall counter increments; the
// figures are the benchmark thread's CPU per event, which is the guest's
// side of the path (the drain runs on another core, as tapes-host's does).
func BenchmarkWasmEventsIsolation(b *testing.B) {
	const perCall = 10000
	for _, g := range []struct {
		name string
		wasm func(testing.TB) []byte
	}{
		{"go", func(tb testing.TB) []byte { return goWasm(tb, "bench", "testdata/wasm/goguest") }},
		{"c", func(tb testing.TB) []byte { return cWasm(tb, "bench/testdata/wasm/cguest.c") }},
	} {
		b.Run(g.name, func(b *testing.B) {
			ctx := context.Background()
			wasm := g.wasm(b)
			rIn := registry.New()
			inproc := benchPlugin(b, g.name, wasm, rIn, false)

			path := filepath.Join(b.TempDir(), "bench.shm")
			h, err := host.Create(path, host.Config{Slots: 4})
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			rShm := h.Registry()
			dctx, stop := context.WithCancel(ctx)
			drained := make(chan error, 1)
			go func() { drained <- h.Drain(dctx) }()
			c, err := shm.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			child, err := plugin.New(ctx, plugin.Config{
				Name: g.name, Wasm: wasm, Sink: plugin.ClientSink(c), Prefix: "plugins." + g.name,
				CacheDir: filepath.Join(builds.Dir(b), "cache"), NoInterrupt: true,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer child.Close(ctx)

			var cpu [2]time.Duration
			func() {
				defer lockThread()()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for j, p := range []*plugin.Plugin{inproc, child} {
						t0 := threadCPU()
						if _, err := p.Call(ctx, "record", perCall); err != nil {
							b.Fatal(err)
						}
						cpu[j] += threadCPU() - t0
					}
				}
				b.StopTimer()
			}()
			events := float64(b.N * perCall)
			if cpu[0] > 0 && cpu[1] > 0 {
				b.ReportMetric(float64(cpu[0].Nanoseconds())/events, "inproc-cpu-ns/event")
				b.ReportMetric(float64(cpu[1].Nanoseconds())/events, "process-cpu-ns/event")
				b.ReportMetric(float64(cpu[1])/float64(cpu[0]), "process/inproc")
			}
			if err := c.Close(); err != nil {
				b.Fatal(err)
			}
			stop()
			if err := <-drained; err != nil && !errors.Is(err, context.Canceled) {
				b.Fatal(err)
			}
			if _, err := h.DrainOnce(); err != nil {
				b.Fatal(err)
			}
			name := "plugins." + g.name + ".bench." + g.name + ".events"
			for _, r := range []*registry.Registry{rIn, rShm} {
				if v := r.Counter(name).Value(); v != int64(b.N*perCall) {
					b.Fatalf("%s = %d, want %d (dropped %d)", name, v, b.N*perCall, c.Dropped())
				}
			}
		})
	}
}
