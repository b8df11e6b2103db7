// Package testenv finds the real servers and toolchains that integration
// tests run against, and decides what a test does when one is missing: in CI
// (CI=true) it fails, because a skipped integration test would pass off as
// coverage; elsewhere it skips with the command that installs the missing
// part. scripts/install-deps.sh installs everything the tests need.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing fails the test in CI and skips it elsewhere, saying how to install
// what is missing.
func Missing(t testing.TB, what, install string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is missing and CI=true: integration tests must not skip (install: %s, or run scripts/install-deps.sh)", what, install)
	}
	t.Skipf("%s is missing; install it with: %s (or run scripts/install-deps.sh)", what, install)
}

// RepoRoot returns the root of the tapes checkout.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// NodeModules is where scripts/install-deps.sh installs npm packages.
func NodeModules() string { return filepath.Join(RepoRoot(), ".cache", "node", "node_modules") }

// StatsD returns the node binary and the path of Etsy StatsD's stats.js.
func StatsD(t testing.TB) (node, statsJS string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		Missing(t, "node", "apt-get install -y nodejs npm")
	}
	statsJS = filepath.Join(NodeModules(), "statsd", "stats.js")
	if _, err := os.Stat(statsJS); err != nil {
		Missing(t, "StatsD (npm package statsd)", "npm install --prefix .cache/node --omit=optional statsd@0.9.0")
	}
	return node, statsJS
}

// Tool returns the path of a command-line tool from a Debian package.
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, name, "apt-get install -y --no-install-recommends "+pkg)
	}
	return p
}

// Prometheus returns the paths of the prometheus server and promtool.
func Prometheus(t testing.TB) (server, promtool string) {
	t.Helper()
	return Tool(t, "prometheus", "prometheus"), Tool(t, "promtool", "prometheus")
}

// WasiClang returns clang after checking that it can build wasm32-wasi
// reactors (clang, lld, wasi-libc and the wasm32 compiler runtime).
func WasiClang(t testing.TB) string {
	t.Helper()
	clang := Tool(t, "clang", "clang lld wasi-libc libclang-rt-dev-wasm32")
	if _, err := exec.LookPath("wasm-ld"); err != nil {
		Missing(t, "wasm-ld", "apt-get install -y lld")
	}
	return clang
}
