package registry

import (
	"sync"
	"testing"
	"time"
)

func TestCoarseClockMonotonicAndFresh(t *testing.T) {
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := int64(0)
			for range 20000 {
				now := coarse.nanos()
				if now < last {
					t.Errorf("clock went back from %d to %d", last, now)
					return
				}
				last = now
			}
		}()
	}
	wg.Wait()
	// The coarse time trails the precise one by about one refresh period;
	// allow a lot more for a loaded machine, but not seconds.
	before := preciseNanos()
	time.Sleep(50 * time.Millisecond)
	got := coarse.nanos()
	if got < before || got > preciseNanos() {
		t.Fatalf("coarse %d outside [%d, now]", got, before)
	}
}

// TestCoarseClockStopsAndRestarts runs a private clock with a 1 ms period
// that stops after 2 idle checks: after it stops, the next read must
// restart it and return a fresh timestamp, not the one it stopped at.
func TestCoarseClockStopsAndRestarts(t *testing.T) {
	c := &coarseClock{res: time.Millisecond, idleStops: 2}
	for round := range 3 {
		t0 := preciseNanos()
		if got := c.nanos(); got < t0 {
			t.Fatalf("round %d: read %d before %d", round, got, t0)
		}
		if !c.running.Load() {
			t.Fatalf("round %d: no refresher after a read", round)
		}
		deadline := time.Now().Add(5 * time.Second)
		for c.running.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: refresher did not stop when idle", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Readers racing a stopping refresher: whatever the interleaving, a
	// refresher runs afterwards while the clock is read.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				c.nanos()
				time.Sleep(100 * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	t0 := preciseNanos()
	deadline := time.Now().Add(5 * time.Second)
	for c.nanos() < t0 {
		if time.Now().After(deadline) {
			t.Fatalf("clock stuck after concurrent reads (running %v)", c.running.Load())
		}
		time.Sleep(time.Millisecond)
	}
}
