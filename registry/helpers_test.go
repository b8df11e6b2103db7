package registry

import (
	"math"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a manual clock for rates and windows. It starts on a whole
// hour so that half-windows (which are aligned to multiples of their length)
// start where the tests expect.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	base := int64(1_700_000_000) * int64(time.Second)
	c.ns.Store(base - base%int64(time.Hour))
	return c
}

func (c *fakeClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

func mustPanic(t *testing.T, f func()) (msg string) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("no panic")
		}
		if err, ok := r.(error); ok {
			msg = err.Error()
		} else {
			msg, _ = r.(string)
		}
	}()
	f()
	return ""
}

// bucket is one non-empty bucket of a sketch: sign -1, 0 (zero bucket), 1.
type bucket struct {
	sign int
	i    int32
	c    uint64
}

func sketchBuckets(s *Sketch) []bucket {
	var out []bucket
	for it := (iter[uint64]{s: &s.b.neg}); ; {
		i, c, ok := it.next()
		if !ok {
			break
		}
		out = append(out, bucket{-1, i, c})
	}
	if s.b.zero != 0 {
		out = append(out, bucket{0, 0, s.b.zero})
	}
	for it := (iter[uint64]{s: &s.b.pos}); ; {
		i, c, ok := it.next()
		if !ok {
			break
		}
		out = append(out, bucket{1, i, c})
	}
	return out
}
