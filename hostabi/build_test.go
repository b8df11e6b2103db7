package hostabi_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/tapes-go/tapes/internal/testenv"
)

// The guests are rebuilt from their source once per test binary, into
// buildDir, and the tests use the rebuilt files; the committed .wasm beside
// each source are for readers and for hosts without a toolchain.
var (
	buildDir  string
	buildMu   sync.Mutex
	buildDone = map[string]buildResult{}

	// testCache spares the tests compiling a Go guest (~0.5 s, ~20 s under
	// the race detector) per plugin and per run: wazero keys its files by
	// the module's hash and its own version, and writes them atomically.
	testCache wazero.CompilationCache
)

type buildResult struct {
	path string
	err  error
}

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "hostabi-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = d
	testCache, err = wazero.NewCompilationCacheWithDir(filepath.Join(testenv.RepoRoot(), ".cache", "wazero"))
	if err != nil {
		testCache = wazero.NewCompilationCache()
	}
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

func once(key string, build func(out string) error) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if r, ok := buildDone[key]; ok {
		return r.path, r.err
	}
	out := filepath.Join(buildDir, key+".wasm")
	err := build(out)
	buildDone[key] = buildResult{out, err}
	return out, err
}

// cGuest builds testdata/<name>.c as a wasm32-wasi reactor and returns its
// bytes.
func cGuest(t testing.TB, name string) []byte {
	t.Helper()
	clang := testenv.WasiClang(t)
	path, err := once("c-"+name, func(out string) error {
		cmd := exec.Command(clang, "--target=wasm32-wasi", "-O2", "-mexec-model=reactor",
			"-I", filepath.Join(testenv.RepoRoot(), "guest", "c"),
			"-o", out, filepath.Join("testdata", name+".c"))
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %v\n%s", cmd, err, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
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
	path, err := once("go-"+mode+"-"+filepath.Base(dir), func(out string) error {
		cmd := exec.Command("go", "build", "-buildmode="+mode, "-o", out, "./"+dir)
		cmd.Dir = testenv.RepoRoot()
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %v\n%s", cmd, err, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cCommand builds testdata/<name>.c as a wasm32-wasi command (with _start).
func cCommand(t testing.TB, name string) []byte {
	t.Helper()
	clang := testenv.WasiClang(t)
	path, err := once("cmd-"+name, func(out string) error {
		cmd := exec.Command(clang, "--target=wasm32-wasi", "-O2",
			"-I", filepath.Join(testenv.RepoRoot(), "guest", "c"),
			"-o", out, filepath.Join("testdata", name+".c"))
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %v\n%s", cmd, err, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
