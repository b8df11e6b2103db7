// Package guesttest builds the WebAssembly test guests from their sources
// in the repository and checks what they record: shared by the tests of the
// host module (hostabi) and of the plugin runner (hostabi/plugin).
package guesttest

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tapes-go/tapes/registry"
)

// Guests builds guests once per test binary (the committed .wasm beside
// each source are for readers and for hosts without a toolchain), and
// keeps a compilation cache that spares the tests compiling a Go guest
// (~0.5 s, ~20 s under the race detector) per plugin and per run: wazero
// keys its files by the module's hash and its own version, and writes them
// atomically.
type Guests struct {
	builds testenv.Builds
	Cache  wazero.CompilationCache
}

// Main opens the cache and runs the tests; a test binary's TestMain
// returns os.Exit(g.Main(m)).
func (g *Guests) Main(m *testing.M) int {
	var err error
	g.Cache, err = wazero.NewCompilationCacheWithDir(filepath.Join(testenv.RepoRoot(), ".cache", "wazero"))
	if err != nil {
		g.Cache = wazero.NewCompilationCache()
	}
	return g.builds.Run(m)
}

// Build returns the bytes of the file build writes (to the path it is
// given), built once per test binary under name.
func (g *Guests) Build(t testing.TB, name string, build func(out string) error) []byte {
	t.Helper()
	return g.builds.Bytes(t, name, build)
}

// C builds hostabi/testdata/<name>.c as a wasm32-wasi reactor.
func (g *Guests) C(t testing.TB, name string) []byte {
	t.Helper()
	return g.builds.Bytes(t, "c-"+name+".wasm", testenv.WasiC(testenv.WasiClang(t), "hostabi/testdata/"+name+".c", true))
}

// Command builds hostabi/testdata/<name>.c as a wasm32-wasi command (with
// _start).
func (g *Guests) Command(t testing.TB, name string) []byte {
	t.Helper()
	return g.builds.Bytes(t, "cmd-"+name+".wasm", testenv.WasiC(testenv.WasiClang(t), "hostabi/testdata/"+name+".c", false))
}

// Go builds the Go package in dir (relative to the repository root) for
// wasip1 with -buildmode=mode ("c-shared": a reactor; "exe": a command).
func (g *Guests) Go(t testing.TB, dir, mode string) []byte {
	t.Helper()
	return g.builds.Bytes(t, "go-"+mode+"-"+filepath.Base(dir)+".wasm", testenv.GoWasm(".", "./"+dir, mode))
}

// CheckEveryKind checks the values the guests' record_all leaves under
// prefix after n calls.
func CheckEveryKind(t *testing.T, r *registry.Registry, prefix string, n int) {
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
