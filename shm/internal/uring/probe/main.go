// Command probe tells scripts/test.sh whether this machine lets tapes-host
// wait through io_uring: it prints "ok", "refused: ERR" (a seccomp filter:
// Docker's and containerd's default profiles refuse io_uring) or
// "unsupported: ERR" (a kernel before Linux 6.7). The test script turns a
// refusal into TAPES_NO_URING=1, said aloud, so that the io_uring tests
// never skip in CI unless the run declares why.
package main

import (
	"fmt"
	"os"

	"github.com/tapes-go/tapes/shm/internal/uring"
)

func main() {
	w, err := uring.Start(new(uint32))
	switch {
	case err == nil:
		w.Stop()
		fmt.Println("ok")
	case uring.Refused(err):
		fmt.Println("refused:", err)
	default:
		fmt.Println("unsupported:", err)
		os.Exit(1)
	}
}
