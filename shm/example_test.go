package shm_test

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tapes-go/tapes/shm"
)

// A host creates the file; a worker (here the same process, normally
// another one that found the path in TAPES_SHM) records into its slot; the
// host drains what was committed into its registry.
func Example() {
	dir, _ := os.MkdirTemp("", "tapes-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "metrics.shm")

	host, err := shm.CreateHost(path, shm.Config{Slots: 4})
	if err != nil {
		panic(err)
	}
	defer host.Close()

	w, err := shm.Open(path) // in a worker: shm.OpenEnv()
	if err != nil {
		panic(err)
	}
	w.Counter("jobs.done").Add(3)
	w.Timer("jobs.latency").Update(20 * time.Millisecond)
	w.Close()

	r := host.Registry()
	if _, err := host.DrainOnce(); err != nil { // services run host.Drain(ctx)
		panic(err)
	}
	fmt.Println(r.Counter("jobs.done").Value(), r.Timer("jobs.latency").Count())
	// Output: 3 1
}
