package shm

import (
	"slices"
	"testing"

	"github.com/tapes-go/tapes/internal/testenv"
)

// TestWorkerImportsNoRegistry: every worker process imports this package,
// so it must not drag in the host's side: the registry, the root package
// (which imports it) and the applier live in the host's binary only
// (package shm/host). The client depends on wire and its own internal
// packages, in every build a worker may use (with and without cgo). Fails
// if any other package of this module appears below shm.
func TestWorkerImportsNoRegistry(t *testing.T) {
	const m = testenv.Module
	allowed := []string{m + "/wire", m + "/shm/internal/layout", m + "/shm/internal/sys", m + "/shm"}
	for _, env := range [][]string{nil, {"GOOS=linux", "CGO_ENABLED=0"}} {
		for _, p := range testenv.Deps(t, m+"/shm", env...) {
			if !slices.Contains(allowed, p) {
				t.Errorf("package shm (%v) depends on %s; a worker may import only %v from this module", env, p, allowed)
			}
		}
	}
}
