package host_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/host"
)

// A host drains its workers into a registry until its context ends; it
// then drains what is committed once more. Here a worker recorded before
// the host's Drain even started (workers never wait for the host), and the
// context is already over, so Drain makes its last pass and returns.
func Example() {
	dir, _ := os.MkdirTemp("", "tapes-example")
	defer os.RemoveAll(dir)
	reg := registry.New()
	h, err := host.Create(filepath.Join(dir, "metrics.shm"), host.Config{Slots: 4, Registry: reg})
	if err != nil {
		panic(err)
	}
	defer h.Close()

	// A worker: another process, started with TAPES_SHM=h.Path().
	w, err := shm.Open(h.Path())
	if err != nil {
		panic(err)
	}
	w.Counter("jobs.done").Add(2)
	w.Close()

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a service cancels at shutdown; here at once
	if err := h.Drain(ctx); err != nil {
		panic(err)
	}
	fmt.Println(reg.Counter("jobs.done").Value(), reg.Counter(host.DefaultPrefix+".reclaimed").Value())
	// Output: 2 1
}
