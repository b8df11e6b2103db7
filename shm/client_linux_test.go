package shm

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
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
	h := newHost(t, Config{Slots: 4})
	const rounds = 40
	for i := 0; i < rounds; i++ {
		c, err := Open(h.Path())
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
	waitFor(t, "closed clients' mappings released", 10*time.Second, func() bool {
		runtime.GC()
		return maps(h.Path()) <= 1 // the host's own
	})
}
