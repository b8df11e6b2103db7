package shm

import (
	"os/exec"
	"strings"
	"testing"
)

// TestWorkersNeedNoCgo: a Go worker imports package shm for its Client and
// must stay a pure Go program (static, built without a C compiler), so
// shm reaches the cgo relay only through relayhook, set by programs that
// import shm/relay (tapes-host). Fails if shm imports a cgo package.
func TestWorkersNeedNoCgo(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if .CgoFiles}}{{.ImportPath}}{{end}}", "github.com/tapes-go/tapes/shm").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Fatalf("package shm depends on cgo packages:\n%s", s)
	}
}
