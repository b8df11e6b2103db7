package shm

import (
	"context"
	"errors"
	"sync/atomic"
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

// TestAttachAndDefineWakeHost: with polling made useless as above, a host
// asleep in its futex wait must still count a worker as soon as it
// attaches, and show a metric as soon as the worker defines it, before any
// event: Open and Define wake the host instead of leaving it to the next
// liveness check an hour away.
func TestAttachAndDefineWakeHost(t *testing.T) {
	h := newHost(t, Config{Slots: 2, RingRecords: 64})
	r := registry.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.Drain(ctx, r, WithMaxIdleSleep(time.Hour), WithLivenessInterval(time.Hour)) }()
	asleep := func() {
		if haveFutex {
			waitFor(t, "the host to sleep", 10*time.Second, func() bool { return atomic.LoadUint32(u32(h.m, hdrWait)) == 1 })
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	workers := func() float64 {
		g, _ := r.Get(DefaultPrefix + ".workers")
		if g == nil {
			return -1
		}
		return g.(*registry.Gauge).Value()
	}
	asleep()
	if n := workers(); n != 0 {
		t.Fatalf("workers = %v before any worker attached", n)
	}
	c, err := Open(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "the host to count the worker", 10*time.Second, func() bool { return workers() == 1 })
	asleep()
	c.Timer("wake.defined")
	waitFor(t, "the defined timer in the host's registry", 10*time.Second, func() bool {
		m, ok := r.Get("wake.defined")
		return ok && m.(*registry.Timer).Count() == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
