package shm_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/host"
)

// Recording never allocates, timing a block included: Timer.Time returns
// wire's Stopwatch by value, reporting to the *Timer it was started from.
func TestRecordPathsDoNotAllocate(t *testing.T) {
	h, err := host.Create(filepath.Join(t.TempDir(), "a.shm"), host.Config{Slots: 2, RingRecords: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := shm.Open(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctr, g, m, tm, hist := c.Counter("a.c"), c.Gauge("a.g", nil), c.Meter("a.m"), c.Timer("a.t"), c.Histogram("a.h")
	paths := map[string]func(){
		"Counter.Inc":      ctr.Inc,
		"Gauge.Set":        func() { g.Set(1.5) },
		"Meter.Mark":       func() { m.Mark(1) },
		"Timer.Update":     func() { tm.Update(time.Millisecond) },
		"Timer.Time.Stop":  func() { tm.Time().Stop() },
		"Timer.Func":       func() { tm.Func(func() {}) },
		"Histogram.Update": func() { hist.Update(2) },
	}
	for name, f := range paths {
		// The ring fills (no Drain runs) and events are dropped and
		// counted: the full path allocates no more than the fast one.
		if n := testing.AllocsPerRun(2000, f); n != 0 {
			t.Errorf("%s allocates %v times per call", name, n)
		}
	}
}
