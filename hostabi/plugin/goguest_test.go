package plugin_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/tapes-go/tapes/guest/tapesguest"
	"github.com/tapes-go/tapes/hostabi/plugin"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

func goPlugin(t *testing.T, r *registry.Registry, pool int) *plugin.Plugin {
	return newPlugin(t, plugin.Config{
		Name: "go", Wasm: goGuest(t, "hostabi/testdata/goguest"), Registry: r, Prefix: "plugins.go", PoolSize: pool,
	})
}

func TestGoGuestEveryKind(t *testing.T) {
	r := registry.New()
	p := goPlugin(t, r, 1)
	const n = 4
	for i := 0; i < n; i++ {
		if s := callP(t, p, "record_all"); s != 0 {
			t.Fatalf("record_all = %d", s)
		}
		if b := callP(t, p, "buffered"); b != 0 {
			t.Fatalf("%d events still buffered after a call; the runner should have flushed them", b)
		}
	}
	checkEveryKind(t, r, "plugins.go.go.", n)
	if g := r.Gauge("plugins.go.go.calls", nil).Value(); g != n {
		t.Errorf("function gauge = %v, want %d", g, n)
	}
	if r.Len() != 6 {
		t.Errorf("registry has %d metrics, want 6", r.Len())
	}
	if st := p.Stats(); st.Rejected != 0 || st.Errors != 0 || st.Defines != 6 {
		t.Errorf("stats %+v", st)
	}

	// Timers use the real clock inside the guest.
	callP(t, p, "timed")
	ts := r.Timer("plugins.go.go.latency").Snapshot()
	if ts.Count != 2*n+1 || ts.Max < 0.001 {
		t.Errorf("timed: count %d max %v, want %d and >= 1ms", ts.Count, ts.Max, 2*n+1)
	}

	if bad := callP(t, p, "define_bad"); bad != 4 {
		t.Errorf("the host refused %d of 4 bad definitions", bad)
	}
}

// Buffer overflow flushes mid-call; nothing is lost.
func TestGoGuestBufferFills(t *testing.T) {
	r := registry.New()
	p := goPlugin(t, r, 1)
	const n = 10*tapesguest.BufferRecords + 7
	callP(t, p, "events", n)
	if v := r.Counter("plugins.go.go.requests").Value(); v != n {
		t.Errorf("counter = %d, want %d", v, n)
	}
}

// A zero handle names no metric: the host rejects its records, counts them,
// and records nothing.
func TestGoGuestZeroHandles(t *testing.T) {
	r := registry.New()
	p := goPlugin(t, r, 1)
	if n := callP(t, p, "zero_handles"); n != 6 {
		t.Errorf("the guest saw %d records rejected, want 6", n)
	}
	if st := p.Stats(); st.Rejected != 6 || st.Records != 0 || st.LastStatus != wire.StatusBadRecord {
		t.Errorf("stats %+v, want 6 rejected as bad records and none applied", st)
	}
	if r.Len() != 0 {
		t.Errorf("registry has %d metrics, want none", r.Len())
	}
}

func TestGoGuestPool(t *testing.T) {
	r := registry.New()
	p := goPlugin(t, r, 3)
	const workers, each = 6, 10
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			var err error
			for i := 0; i < each && err == nil; i++ {
				_, err = p.Call(context.Background(), "record_all")
			}
			errc <- err
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	checkEveryKind(t, r, "plugins.go.go.", workers*each)
	if st := p.Stats(); st.Instances < 1 || st.Instances > 3 || st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A Go panic traps (runtime.abort); the instance is replaced.
func TestGoGuestPanic(t *testing.T) {
	r := registry.New()
	p := goPlugin(t, r, 1)
	callP(t, p, "record_all")
	if _, err := p.Call(context.Background(), "panics"); err == nil {
		t.Fatal("a guest panic returned no error")
	}
	callP(t, p, "record_all")
	checkEveryKind(t, r, "plugins.go.go.", 2)
	if st := p.Stats(); st.Traps != 1 || st.Replaced != 1 || st.Instances != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A Go command module runs through RunStart and flushes before exiting.
func TestGoCommand(t *testing.T) {
	r := registry.New()
	p := newPlugin(t, plugin.Config{
		Name: "gocmd", Wasm: goBuild(t, "hostabi/testdata/gocmd", "default"), Registry: r, Prefix: "plugins.gocmd",
	})
	if p.HasExport("_initialize") || !p.HasExport("_start") {
		t.Fatal("not a command module")
	}
	for i := 0; i < 2; i++ {
		if err := p.RunStart(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if v := r.Counter("plugins.gocmd.runs").Value(); v != 2 {
		t.Errorf("runs = %d, want 2", v)
	}
}

// A Go guest allocating past its memory limit dies (the Go runtime aborts
// when memory.grow fails); the host and the next call are unaffected.
func TestGoGuestMemoryLimit(t *testing.T) {
	r := registry.New()
	p := newPlugin(t, plugin.Config{
		Name: "go", Wasm: goGuest(t, "hostabi/testdata/goguest"), Registry: r, Prefix: "plugins.go",
		MemoryLimitPages: 512, // 32 MiB
	})
	if n := callP(t, p, "alloc", 4); n != 4 {
		t.Fatalf("alloc(4) = %d", n)
	}
	if _, err := p.Call(context.Background(), "alloc", 64); err == nil {
		t.Fatal("allocating 64 MiB under a 32 MiB limit succeeded")
	}
	callP(t, p, "record_all")
	checkEveryKind(t, r, "plugins.go.go.", 1)
	if st := p.Stats(); st.Traps != 1 || st.Replaced != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A Go guest stuck in a loop is stopped by the deadline through its fuel
// checks, while the host collects garbage, and the plugin serves the next
// call from a fresh instance.
func TestGoGuestSpinDeadline(t *testing.T) {
	r := registry.New()
	p := newPlugin(t, plugin.Config{
		Name: "go", Wasm: goGuest(t, "hostabi/testdata/goguest"), Registry: r, Prefix: "plugins.go",
		// The deadline also bounds the replacement instance's _initialize
		// (record_all below), which took over 300 ms under -race on a
		// loaded 2-vCPU machine.
		CallTimeout: 2 * time.Second,
	})
	if m := p.Stats().Interrupt; m != plugin.InterruptFuel {
		t.Fatalf("interrupt mode %q, want %q", m, plugin.InterruptFuel)
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.Call(context.Background(), "spin")
		done <- err
	}()
	gcs := 0
	for wait := true; wait; {
		select {
		case err := <-done:
			if !isDeadline(err) {
				t.Fatalf("spin returned %v, want a deadline exit", err)
			}
			wait = false
		default:
			runtime.GC() // returns only if the spinning guest reaches Go
			gcs++
		}
	}
	if gcs == 0 {
		t.Error("no collection ran while the guest spun")
	}
	if s := callP(t, p, "record_all"); s != 0 {
		t.Fatalf("record_all after the timeout = %d", s)
	}
	if st := p.Stats(); st.Timeouts != 1 || st.Replaced != 1 {
		t.Errorf("stats %+v", st)
	}
}
