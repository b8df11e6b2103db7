package shm_test

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/host"
)

// A closed client's mapping is released once nothing can record into it
// any more. The client and its handles point at each other; a finalizer
// in that cycle never ran, so every Open/Close kept a mapping and the
// ring pages it populated for the life of the process (a fuzz worker
// filled /dev/shm and died of it). The file name limits the test to
// Linux, for /proc/self/maps; the cleanup it checks is portable.
func TestClosedClientReleasesMapping(t *testing.T) {
	maps := func(path string) int {
		b, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), path)
	}
	h, err := host.Create(filepath.Join(t.TempDir(), "m.shm"), host.Config{Slots: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	const rounds = 40
	for i := 0; i < rounds; i++ {
		c, err := shm.Open(h.Path())
		if err != nil {
			t.Fatal(err)
		}
		c.Counter("jobs").Inc()
		c.Timer("latency").Update(time.Millisecond)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := h.DrainOnce(); err != nil { // frees the slot for the next round
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if maps(h.Path()) <= 1 { // the host's own
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mappings of the file after %d closed clients, want only the host's", maps(h.Path()), rounds)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
