package host

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Multi-process tests re-execute the test binary with roleEnv naming what
// the child does; TestMain runs that role instead of the tests.
const roleEnv = "TAPES_SHM_TEST_ROLE"

var roles = map[string]func() int{}

func TestMain(m *testing.M) {
	if r := os.Getenv(roleEnv); r != "" {
		f, ok := roles[r]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown role %q\n", r)
			os.Exit(2)
		}
		os.Exit(f())
	}
	os.Exit(m.Run())
}

func envInt(name string) int {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		panic(fmt.Sprintf("%s: %v", name, err))
	}
	return v
}

// child starts the test binary in role with the given environment.
func child(t testing.TB, role string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{roleEnv + "=" + role}, env...)...)
	cmd.Stderr = os.Stderr
	return cmd
}

// tmpfsDir is where test files go: /dev/shm when it exists, as in
// production (DefaultPath), because a shared mapping of a disk file pays
// for block allocation and write-back on its page faults.
func tmpfsDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return ""
}

func tempPath(t testing.TB) string {
	dir, err := os.MkdirTemp(tmpfsDir(), "tapes-shm-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "m.shm")
}

func newHost(t testing.TB, cfg Config) *Host {
	t.Helper()
	h, err := Create(tempPath(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
