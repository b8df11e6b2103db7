package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Builds holds what a test binary builds from source (guests, helper
// commands): each key once per process, into one directory of its own,
// which Run deletes after the tests (TestMain: os.Exit(builds.Run(m))). A
// process killed before that (a test timeout) leaves its directory behind,
// and the next test binary to build removes the directories of processes
// that are gone.
type Builds struct {
	mu   sync.Mutex
	dir  string
	err  error
	done map[string]built
}

type built struct {
	path string
	err  error
}

// Dir returns the process's build directory, creating it on first use.
func (b *Builds) Dir(tb testing.TB) string {
	tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.makeDir(); err != nil {
		tb.Fatal(err)
	}
	return b.dir
}

func (b *Builds) makeDir() error {
	if b.dir == "" && b.err == nil {
		b.dir, b.err = makeBuildDir()
	}
	return b.err
}

// makeBuildDir makes TMPDIR/tapes-build-UID/PID and removes the
// directories there of processes that no longer run.
func makeBuildDir() (string, error) {
	parent := filepath.Join(os.TempDir(), fmt.Sprintf("tapes-build-%d", os.Getuid()))
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", err
	}
	if old, err := os.ReadDir(parent); err == nil {
		for _, e := range old {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if syscall.Kill(pid, 0) == syscall.ESRCH {
				os.RemoveAll(filepath.Join(parent, e.Name()))
			}
		}
	}
	dir := filepath.Join(parent, strconv.Itoa(os.Getpid()))
	return dir, os.MkdirAll(dir, 0o700)
}

// Path returns the file built for key, running build(out) the first time
// (out is where build writes it). A failed build fails every test that
// asks for it.
func (b *Builds) Path(tb testing.TB, key string, build func(out string) error) string {
	tb.Helper()
	b.mu.Lock()
	r, ok := b.done[key]
	if !ok {
		if err := b.makeDir(); err != nil {
			b.mu.Unlock()
			tb.Fatal(err)
		}
		r.path = filepath.Join(b.dir, key)
		r.err = build(r.path)
		if b.done == nil {
			b.done = map[string]built{}
		}
		b.done[key] = r
	}
	b.mu.Unlock()
	if r.err != nil {
		tb.Fatal(r.err)
	}
	return r.path
}

// Bytes returns the contents of the file built for key (see Path).
func (b *Builds) Bytes(tb testing.TB, key string, build func(out string) error) []byte {
	tb.Helper()
	data, err := os.ReadFile(b.Path(tb, key, build))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// Run runs the tests, then deletes the build directory, and returns the
// exit code for os.Exit.
func (b *Builds) Run(m *testing.M) int {
	defer b.remove()
	return m.Run()
}

func (b *Builds) remove() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// GoBuild is a build step: go build -o out pkg in the module at dir
// (relative to the repository root).
func GoBuild(dir, pkg string) func(out string) error {
	return func(out string) error { return run(goCmd(dir, nil, "build", "-o", out, pkg)) }
}

// GoWasm is a build step: the Go package pkg of the module at dir
// (relative to the repository root) for wasip1, with -buildmode=mode
// ("c-shared" for a reactor, "exe" for a command).
func GoWasm(dir, pkg, mode string) func(out string) error {
	return func(out string) error {
		return run(goCmd(dir, []string{"GOOS=wasip1", "GOARCH=wasm"}, "build", "-buildmode="+mode, "-o", out, pkg))
	}
}

// goCmd is the go command run in dir (relative to the repository root)
// with env added. Run in another module than the test's own, it does not
// inherit GOFLAGS, which may name the test module's files (-modfile).
func goCmd(dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Join(RepoRoot(), dir)
	wd, _ := os.Getwd()
	same := moduleRoot(cmd.Dir) == moduleRoot(wd)
	for _, kv := range os.Environ() {
		if same || !strings.HasPrefix(kv, "GOFLAGS=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// moduleRoot is the nearest directory at or above dir holding a go.mod.
func moduleRoot(dir string) string {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil || d == filepath.Dir(d) {
			return d
		}
	}
}

// WasiC is a build step: the C file src (relative to the repository root)
// for wasm32-wasi with guest/c on the include path, as a reactor (exports,
// no _start) or a command.
func WasiC(clang, src string, reactor bool) func(out string) error {
	return func(out string) error {
		args := []string{"--target=wasm32-wasi", "-O2"}
		if reactor {
			args = append(args, "-mexec-model=reactor")
		}
		root := RepoRoot()
		args = append(args, "-I", filepath.Join(root, "guest", "c"), "-o", out, filepath.Join(root, src))
		return run(exec.Command(clang, args...))
	}
}

func run(cmd *exec.Cmd) error {
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %v\n%s", cmd, err, b)
	}
	return nil
}
