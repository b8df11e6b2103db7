package relay

import (
	"os"
	"runtime"
	"testing"

	"github.com/tapes-go/tapes/internal/testenv"
)

// In CI (CI=true, Linux, gcc installed by scripts/install-deps.sh) the
// relay must be built: otherwise its tests would not run and tapes-host
// would fall back to the futex wait without anyone noticing. A run without
// cgo on purpose sets TAPES_NO_CGO=1.
func TestRelayBuiltInCI(t *testing.T) {
	if !Available && testenv.InCI() && runtime.GOOS == "linux" && os.Getenv("TAPES_NO_CGO") != "1" {
		t.Fatal("the relay is not built (cgo off: is gcc installed?); tapes-host would wait in futex(2) from a goroutine")
	}
}
