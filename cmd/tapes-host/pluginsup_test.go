package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
	shmhost "github.com/tapes-go/tapes/shm/host"
)

var builds testenv.Builds

// BenchmarkPluginRestart measures how long a killed plugin takes to be
// back: SIGKILL and reaping its process, then starting a new one, loading
// the module (from a warm compilation cache) and running _initialize, up to
// the reply that it is ready. The backoff that tapes-host waits before a
// restart (100 ms at first) is not included.
func BenchmarkPluginRestart(b *testing.B) {
	for _, g := range []struct {
		name string
		wasm func(testing.TB) string
	}{
		{"c", func(testing.TB) string {
			return filepath.Join(testenv.RepoRoot(), "examples", "plugin-c", "plugin-c.wasm")
		}},
		{"go", func(tb testing.TB) string {
			return builds.Path(tb, "plugin-go.wasm", testenv.GoWasm(".", "./examples/plugin-go", "c-shared"))
		}},
	} {
		b.Run(g.name, func(b *testing.B) {
			dir := b.TempDir()
			h, err := shmhost.Create(filepath.Join(dir, "r.shm"), shmhost.Config{Slots: 256})
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			r := h.Registry()
			go h.Drain(ctx) // reclaims the killed processes' slots
			self, err := os.Executable()
			if err != nil {
				b.Fatal(err)
			}
			s := &pluginSup{
				spec: pluginSpec{path: g.wasm(b), prefix: "plugins.r"}, seg: "r",
				log: slog.New(slog.NewTextHandler(io.Discard, nil)), m: newPluginMetrics(r, "r"),
				self: self, shm: h.Path(), cache: filepath.Join(dir, "cache"), pages: 256,
				timeout: 10 * time.Second, every: time.Second,
			}
			if _, _, err := s.startChild(ctx); err != nil { // fills the cache
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.killChild()
				if _, _, err := s.startChild(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/restart")
			s.close()
		})
	}
}
