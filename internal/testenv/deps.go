package testenv

import (
	"strings"
	"testing"
)

// Module is this repository's module path.
const Module = "github.com/tapes-go/tapes"

// Deps returns the packages of this module that pkg (an import path)
// imports, directly or not, itself included, as `go list -deps` gives them
// for the build environment env (GOOS=..., CGO_ENABLED=...). Tests that
// keep a package's dependencies small check it: an import added anywhere
// below it shows here.
func Deps(t testing.TB, pkg string, env ...string) []string {
	t.Helper()
	cmd := goCmd(".", env, "list", "-deps", "-f", "{{.ImportPath}}", pkg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s (%s): %v\n%s", pkg, strings.Join(env, " "), err, out)
	}
	var own []string
	for _, p := range strings.Fields(string(out)) {
		if p == Module || strings.HasPrefix(p, Module+"/") {
			own = append(own, p)
		}
	}
	return own
}
