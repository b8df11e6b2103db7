package plugin_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/tapes-go/tapes/internal/testenv"
)

// The guests are rebuilt from their source once per test binary, and the
// tests use the rebuilt files; the committed .wasm beside each source are
// for readers and for hosts without a toolchain.
var (
	builds testenv.Builds

	// testCache spares the tests compiling a Go guest (~0.5 s, ~20 s under
	// the race detector) per plugin and per run: wazero keys its files by
	// the module's hash and its own version, and writes them atomically.
	testCache wazero.CompilationCache
)

func TestMain(m *testing.M) {
	var err error
	testCache, err = wazero.NewCompilationCacheWithDir(filepath.Join(testenv.RepoRoot(), ".cache", "wazero"))
	if err != nil {
		testCache = wazero.NewCompilationCache()
	}
	os.Exit(builds.Run(m))
}

// cGuest builds hostabi/testdata/<name>.c as a wasm32-wasi reactor and
// returns its bytes.
func cGuest(t testing.TB, name string) []byte {
	t.Helper()
	return builds.Bytes(t, "c-"+name+".wasm", testenv.WasiC(testenv.WasiClang(t), "hostabi/testdata/"+name+".c", true))
}

// cCommand builds hostabi/testdata/<name>.c as a wasm32-wasi command (with
// _start).
func cCommand(t testing.TB, name string) []byte {
	t.Helper()
	return builds.Bytes(t, "cmd-"+name+".wasm", testenv.WasiC(testenv.WasiClang(t), "hostabi/testdata/"+name+".c", false))
}

// goGuest builds the Go package in dir (relative to the repo root) for
// wasip1 as a c-shared reactor and returns its bytes.
func goGuest(t testing.TB, dir string) []byte {
	t.Helper()
	return goBuild(t, dir, "c-shared")
}

// goBuild builds the Go package in dir with -buildmode=mode for wasip1.
func goBuild(t testing.TB, dir, mode string) []byte {
	t.Helper()
	return builds.Bytes(t, "go-"+mode+"-"+filepath.Base(dir)+".wasm", testenv.GoWasm(".", "./"+dir, mode))
}
