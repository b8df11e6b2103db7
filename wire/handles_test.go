package wire

import (
	"testing"
	"time"
)

type sumTimer struct{ n, total time.Duration }

func (s *sumTimer) Update(d time.Duration) { s.n++; s.total += d }

// A Stopwatch reports one duration to its recorder, and timing a block
// allocates nothing: the shm client's and the guest's Timer.Time share it
// with the registry.
func TestStopwatch(t *testing.T) {
	var s sumTimer
	sw := StartStopwatch(&s)
	d := sw.Stop()
	if s.n != 1 || s.total != d || d < 0 {
		t.Fatalf("stopwatch reported %d durations totalling %v, Stop returned %v", s.n, s.total, d)
	}
	if (Stopwatch{}).Stop() != 0 {
		t.Fatal("a zero stopwatch recorded something")
	}
	if n := testing.AllocsPerRun(1000, func() { StartStopwatch(&s).Stop() }); n != 0 {
		t.Fatalf("Stopwatch allocates %v times per block", n)
	}
}
