package shm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
)

// TestDrainWakesOnRecord makes polling useless (hour-long idle sleeps and
// liveness interval), so the host sees an event only if the worker's
// futex wake-up reaches it; then checks that cancelling and closing end a
// sleeping Drain.
func TestDrainWakesOnRecord(t *testing.T) {
	h := newHost(t, Config{Slots: 2, RingRecords: 64})
	c, err := Open(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctr := c.Counter("wake.n")
	r := registry.New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Drain(ctx, r, WithMaxIdleSleep(time.Hour), WithLivenessInterval(time.Hour)) }()
	for i := 1; i <= 5; i++ {
		time.Sleep(20 * time.Millisecond) // the host is asleep by now
		ctr.Inc()
		waitFor(t, "the event", 10*time.Second, func() bool { return r.Counter("wake.n").Value() == int64(i) })
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Drain after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return after its context was cancelled")
	}

	go func() { done <- h.Drain(context.Background(), r, WithMaxIdleSleep(time.Hour)) }()
	time.Sleep(20 * time.Millisecond)
	h.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Drain after Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return after Close")
	}
}
