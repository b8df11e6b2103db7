package bench

import (
	"os"
	"testing"

	"github.com/tapes-go/tapes/internal/testenv"
)

// builds holds what the benchmarks build from source (guests, shmload,
// httpbench, tapes-host), once per test binary; TestMain removes it.
var builds testenv.Builds

func TestMain(m *testing.M) {
	os.Exit(builds.Run(m))
}
