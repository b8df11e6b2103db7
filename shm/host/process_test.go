package host

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
)

func init() {
	roles["seq"] = roleSeq
}

// roleSeq records a known sequence: worker k of the test records n events of
// each kind, with values that identify the worker and the event.
func roleSeq() int {
	k, n := envInt("SEQ_K"), envInt("SEQ_N")
	c, err := OpenEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cnt := c.Counter("seq.count")
	mtr := c.Meter("seq.rate")
	hst := c.Histogram("seq.size")
	tmr := c.Timer("seq.time")
	for j := 0; j < n; j++ {
		cnt.Inc()
		mtr.Mark(2)
		hst.Update(float64(k*1_000_000 + j))
		tmr.Update(time.Duration(j+1) * time.Microsecond)
	}
	if d := c.Dropped(); d != 0 {
		fmt.Fprintf(os.Stderr, "worker %d dropped %d\n", k, d)
		return 3
	}
	if err := c.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestWorkersExactTotals: worker processes record known sequences and the
// host's totals are exact, whether it drains while they record ("live") or
// attaches after they exited and drains their whole rings at once
// ("backlog"), which it does on several goroutines.
func TestWorkersExactTotals(t *testing.T) {
	t.Run("live", func(t *testing.T) { workersExactTotals(t, true) })
	t.Run("backlog", func(t *testing.T) {
		var procs atomic.Int64
		testHookParallel = func(n int) { procs.Store(int64(n)) }
		defer func() { testHookParallel = nil }()
		workersExactTotals(t, false)
		if runtime.GOMAXPROCS(0) > 1 && procs.Load() < 2 {
			t.Errorf("the backlog was drained on %d goroutines, want 2 or more", procs.Load())
		}
	})
}

func workersExactTotals(t *testing.T, live bool) {
	const workers, n = 4, 20000
	h := newHost(t, Config{Slots: 8, RingRecords: 1 << 17})
	r := h.Registry()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var drainErr error
	start := func() {
		wg.Add(1)
		go func() { defer wg.Done(); drainErr = h.Drain(ctx) }()
	}
	if live {
		start()
	}

	var cmds sync.WaitGroup
	for k := 0; k < workers; k++ {
		cmd := child(t, "seq", shm.EnvVar+"="+h.Path(), "SEQ_K="+strconv.Itoa(k), "SEQ_N="+strconv.Itoa(n))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds.Add(1)
		go func() {
			defer cmds.Done()
			if err := cmd.Wait(); err != nil {
				t.Errorf("worker: %v", err)
			}
		}()
	}
	cmds.Wait()
	if !live {
		start()
	}
	waitFor(t, "all events", 20*time.Second, func() bool {
		m, ok := r.Get("seq.time")
		return ok && m.(*registry.Timer).Count() == workers*n
	})
	cancel()
	wg.Wait()
	if drainErr != nil {
		t.Fatal(drainErr)
	}
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if got := r.Counter("seq.count").Value(); got != workers*n {
		t.Errorf("counter = %d, want %d", got, workers*n)
	}
	if got := r.Meter("seq.rate").Count(); got != 2*workers*n {
		t.Errorf("meter = %d, want %d", got, 2*workers*n)
	}
	hs := r.Histogram("seq.size").Snapshot()
	if hs.Count != workers*n || hs.Min != 0 || hs.Max != float64((workers-1)*1_000_000+n-1) {
		t.Errorf("histogram count %d min %v max %v", hs.Count, hs.Min, hs.Max)
	}
	ts := r.Timer("seq.time").Snapshot()
	if ts.Count != workers*n || ts.Min != time.Microsecond.Seconds() || ts.Max != (time.Duration(n)*time.Microsecond).Seconds() {
		t.Errorf("timer count %d min %v max %v", ts.Count, ts.Min, ts.Max)
	}
	if got := r.Counter("tapes.shm.drained").Value(); got != 4*workers*n {
		t.Errorf("events = %d, want %d", got, 4*workers*n)
	}
	if got := r.Counter("tapes.shm.reclaimed").Value(); got != workers {
		t.Errorf("reclaimed = %d, want %d", got, workers)
	}
	for _, name := range []string{"malformed", "rejected", "discarded", "aborted", "dropped.all"} {
		if v := r.Counter("tapes.shm." + name).Value(); v != 0 {
			t.Errorf("tapes.shm.%s = %d", name, v)
		}
	}
	rep, err := shm.Inspect(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Workers) != 0 {
		t.Errorf("slots still in use after the workers exited: %+v", rep.Workers)
	}
}
