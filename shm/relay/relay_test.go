//go:build linux && cgo

package relay

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// word maps a page outside the Go heap (the thread keeps the pointer, which
// cgo's rules forbid for Go memory) and returns its first word, set to 1:
// "asleep".
func word(t *testing.T) *uint32 {
	m, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(m) })
	w := (*uint32)(unsafe.Pointer(&m[0]))
	atomic.StoreUint32(w, 1)
	return w
}

func wake(w *uint32) {
	atomic.StoreUint32(w, 0)
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(w)), 1, 1, 0, 0, 0)
}

func alive(tid int) bool {
	_, err := os.Stat("/proc/self/task/" + strconv.Itoa(tid))
	return err == nil
}

// TestRelay: an armed relay answers a futex wake-up at once and a timeout
// at its end, and Stop ends its thread and any Await.
func TestRelay(t *testing.T) {
	w := word(t)
	r, err := Start(w)
	if err != nil {
		t.Fatal(err)
	}
	for r.TID() == 0 {
		time.Sleep(time.Millisecond)
	}
	tid := r.TID()
	if !alive(tid) {
		t.Fatalf("thread %d not in /proc/self/task", tid)
	}
	for i := 0; i < 3; i++ {
		atomic.StoreUint32(w, 1)
		r.Arm(time.Hour)
		got := make(chan error, 1)
		go func() { got <- r.Await() }()
		select {
		case err := <-got:
			t.Fatalf("Await returned before the wake-up: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		wake(w)
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a wake-up of the word did not end Await")
		}
	}
	// A timeout answers too (the word stays 1: nobody woke it).
	atomic.StoreUint32(w, 1)
	t0 := time.Now()
	r.Arm(30 * time.Millisecond)
	if err := r.Await(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 25*time.Millisecond {
		t.Fatalf("Await returned after %v, before its 30ms timeout", d)
	}

	// Stop ends the thread, and an Await with no request outstanding.
	got := make(chan error, 1)
	go func() { got <- r.Await() }()
	time.Sleep(20 * time.Millisecond)
	r.Stop()
	select {
	case err := <-got:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Await after Stop: %v, want os.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not end Await")
	}
	// pthread_join has returned: the thread is gone.
	for t0 := time.Now(); alive(tid); time.Sleep(time.Millisecond) {
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("thread %d still in /proc/self/task after Stop", tid)
		}
	}
}

// TestRelayStopWakesWait: Stop with the thread asleep on the word ends it
// once the caller has woken the word, not at the wait's timeout.
func TestRelayStopWakesWait(t *testing.T) {
	w := word(t)
	r, err := Start(w)
	if err != nil {
		t.Fatal(err)
	}
	r.Arm(time.Hour)
	time.Sleep(20 * time.Millisecond) // asleep by now
	wake(w)
	stopWithin(t, r)
}

// TestRelayTick: Tick answers every period without a wake-up of the word,
// and the next Arm ends the ticking.
func TestRelayTick(t *testing.T) {
	w := word(t)
	atomic.StoreUint32(w, 0) // the host is awake while it ticks
	r, err := Start(w)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	r.Tick(5 * time.Millisecond)
	for i := 0; i < 5; i++ {
		awaitWithin(t, r, fmt.Sprintf("tick %d", i))
	}
	armAfterTicks(t, r, w)
	// Answered, and not asked again: nothing more.
	got := make(chan error, 1)
	go func() { got <- r.Await() }()
	select {
	case err := <-got:
		t.Fatalf("an answer with no request outstanding (%v): still ticking", err)
	case <-time.After(100 * time.Millisecond):
	}
}

// switches returns how often thread tid has slept (voluntary context
// switches): each of the relay thread's futex waits that blocks is one.
func switches(t *testing.T, tid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no voluntary_ctxt_switches in %s", b)
	return 0
}

// TestRelayTickStopsUnread: a host that stops awaiting while ticking (it
// passes back to back, or naps on a Go timer while a worker scribbles the
// word) costs the thread one more wake-up, not one a period; its next
// Await reads the answer left and the ticks go on.
func TestRelayTickStopsUnread(t *testing.T) {
	w := word(t)
	atomic.StoreUint32(w, 0)
	r, err := Start(w)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	for r.TID() == 0 {
		time.Sleep(time.Millisecond)
	}
	await := func(what string) { t.Helper(); awaitWithin(t, r, what) }
	const period = time.Millisecond
	r.Tick(period)
	await("the first tick")
	before := switches(t, r.TID())
	time.Sleep(200 * period) // not awaiting
	if n := switches(t, r.TID()) - before; n > 5 {
		t.Errorf("the thread woke %d times in 200 periods with its last tick unread, want at most a few", n)
	}
	await("the tick left unread")
	before = switches(t, r.TID())
	for i := 0; i < 20; i++ {
		await("a tick after the unread one was read")
	}
	// Each came from a timeout of the thread's (the first may be the one
	// left unread).
	if n := switches(t, r.TID()) - before; n < 15 {
		t.Errorf("20 ticks awaited in %d thread wake-ups", n)
	}
}

// TestRelayParkedThenArmedOrStopped: a thread that stopped ticking on an
// unread answer takes an Arm as any request (one stale answer, then
// nothing until the word is woken), and Stop ends it.
func TestRelayParkedThenArmedOrStopped(t *testing.T) {
	w := word(t)
	atomic.StoreUint32(w, 0)
	r, err := Start(w)
	if err != nil {
		t.Fatal(err)
	}
	r.Tick(time.Millisecond)
	if err := r.Await(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // parked on the unread tick
	armAfterTicks(t, r, w)
	r.Tick(time.Millisecond)
	if err := r.Await(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // parked again
	stopWithin(t, r)
}

// armAfterTicks arms r, which was ticking, for an hour on w: a tick may
// have been answered just before the Arm (Await reads it), then nothing
// may come until the word is woken, and then the answer does.
func armAfterTicks(t *testing.T, r *Relay, w *uint32) {
	t.Helper()
	atomic.StoreUint32(w, 1)
	r.Arm(time.Hour)
	got := make(chan error, 1)
	go func() { got <- r.Await() }()
	select {
	case <-got:
		go func() { got <- r.Await() }()
	case <-time.After(50 * time.Millisecond):
	}
	select {
	case err := <-got:
		t.Fatalf("an answer after Arm with nobody waking the word (%v): still ticking", err)
	case <-time.After(100 * time.Millisecond):
	}
	wake(w)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// awaitWithin requires an answer of r within 10 s.
func awaitWithin(t *testing.T, r *Relay, what string) {
	t.Helper()
	got := make(chan error, 1)
	go func() { got <- r.Await() }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never came", what)
	}
}

// stopWithin requires r.Stop to return within 10 s.
func stopWithin(t *testing.T, r *Relay) {
	t.Helper()
	done := make(chan struct{})
	go func() { r.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return")
	}
}

// TestRelayStopUnderTicks: Stop while a goroutine awaits ticks of the
// shortest period the host uses, over and over: Await's last read may
// still be telling the thread about it as Stop runs, so the thread's
// memory must outlive the eventfd (a use after free crashed or corrupted
// the heap, not always).
func TestRelayStopUnderTicks(t *testing.T) {
	for i := 0; i < 200; i++ {
		w := word(t)
		atomic.StoreUint32(w, 0)
		r, err := Start(w)
		if err != nil {
			t.Fatal(err)
		}
		r.Tick(64 * time.Microsecond)
		done := make(chan error, 1)
		go func() {
			for {
				if err := r.Await(); err != nil {
					done <- err
					return
				}
			}
		}()
		time.Sleep(time.Duration(i%8) * 100 * time.Microsecond)
		r.Stop()
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrClosed) {
				t.Fatalf("Await after Stop: %v, want os.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Stop did not end Await")
		}
	}
}
