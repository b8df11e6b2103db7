package shm_test

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/host"
)

// A worker (here the same process as the host, normally another one that
// found the path in TAPES_SHM) claims a slot of the file a host created and
// records into it; the host drains what was committed into its registry.
func Example() {
	dir, _ := os.MkdirTemp("", "tapes-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "metrics.shm")

	h, err := host.Create(path, host.Config{Slots: 4}) // in the host process
	if err != nil {
		panic(err)
	}
	defer h.Close()

	w, err := shm.Open(path) // in a worker: shm.OpenEnv()
	if err != nil {
		panic(err)
	}
	w.Counter("jobs.done").Add(3)
	w.Timer("jobs.latency").Update(20 * time.Millisecond)
	w.Close()

	if _, err := h.DrainOnce(); err != nil { // services run h.Drain(ctx)
		panic(err)
	}
	r := h.Registry()
	fmt.Println(r.Counter("jobs.done").Value(), r.Timer("jobs.latency").Count())
	// Output: 3 1
}
