//go:build linux

package uring

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/tapes-go/tapes/internal/testenv"
)

func start(t *testing.T, word *uint32) *Waiter {
	t.Helper()
	w, err := Start(word)
	if errors.Is(err, ErrUnsupported) && !(testenv.InCI() && os.Getenv("TAPES_NO_URING") != "1") {
		// In CI the machine must have it (Linux 6.7 or later, io_uring
		// allowed), or the run says it has not with TAPES_NO_URING=1
		// (scripts/test.sh does where seccomp refuses it).
		t.Skipf("this kernel cannot wait on a futex through io_uring: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

// await runs Await and returns its error, failing the test with what if it
// has not returned within 10 s (a bound on "it returned at all").
func await(t *testing.T, w *Waiter, what string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.Await() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal(what)
		return nil
	}
}

func wake(word *uint32) {
	atomic.StoreUint32(word, 0)
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(word)), 1 /* FUTEX_WAKE */, 1<<30, 0, 0, 0) // every waiter, as workers do (docs/shm-layout.md)
}

func TestWokenByFutexWake(t *testing.T) {
	word := new(uint32)
	w := start(t, word)
	for i := 0; i < 50; i++ {
		atomic.StoreUint32(word, 1)
		w.Arm(time.Hour)
		go func() { time.Sleep(time.Millisecond); wake(word) }()
		if err := await(t, w, fmt.Sprintf("round %d: not woken", i)); err != nil {
			t.Fatal(err)
		}
		if atomic.LoadUint32(word) != 0 {
			t.Fatal("woken while the word was still 1")
		}
	}
}

func TestWordAlreadyDown(t *testing.T) {
	word := new(uint32) // 0: a worker has woken the host before it slept
	w := start(t, word)
	w.Arm(time.Hour)
	if err := await(t, w, "slept on a word that was not 1"); err != nil {
		t.Fatal(err)
	}
}

func TestTimeout(t *testing.T) {
	word := new(uint32)
	*word = 1
	w := start(t, word)
	t0 := time.Now()
	w.Arm(20 * time.Millisecond)
	if err := w.Await(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 20*time.Millisecond {
		t.Fatalf("returned after %v, before its timeout", d)
	}
	// The ring is clean after a timeout: the next wait is woken.
	w.Arm(time.Hour)
	go func() { time.Sleep(time.Millisecond); wake(word) }()
	if err := w.Await(); err != nil {
		t.Fatal(err)
	}
}

func TestTick(t *testing.T) {
	word := new(uint32)
	*word = 1
	w := start(t, word)
	w.Tick(2 * time.Millisecond)
	t0 := time.Now()
	for i := 0; i < 10; i++ {
		if err := w.Await(); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(t0); d < 20*time.Millisecond {
		t.Fatalf("10 windows of 2ms in %v", d)
	}
	w.Arm(time.Hour)
	go func() { time.Sleep(time.Millisecond); wake(word) }()
	if err := w.Await(); err != nil {
		t.Fatal(err)
	}
}

// TestStopEndsAwait: Stop ends an Await asleep on the futex word or in a
// coalescing window (the timerfd) alike.
func TestStopEndsAwait(t *testing.T) {
	for _, tc := range []struct {
		name string
		ask  func(w *Waiter)
	}{
		{"sleep", func(w *Waiter) { w.Arm(time.Hour) }},
		{"window", func(w *Waiter) { w.Tick(time.Hour) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			word := new(uint32)
			*word = 1
			w := start(t, word)
			tc.ask(w)
			done := make(chan error)
			go func() { done <- w.Await() }()
			time.Sleep(10 * time.Millisecond)
			w.Stop()
			select {
			case err := <-done:
				if !errors.Is(err, os.ErrClosed) {
					t.Fatalf("Await after Stop: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Stop did not end Await")
			}
		})
	}
}

// TestRingPerThread: the caller's goroutine runs on several OS threads in
// turn; each gets a ring of its own (only a ring's own thread may use it:
// on another, the kernel refuses the submission and Arm looks its thread's
// up), a wait armed on one thread is answered while the goroutine runs on
// another, and the rings stay bounded however many threads it visits.
func TestRingPerThread(t *testing.T) {
	word := new(uint32)
	w := start(t, word)
	for i := 0; i < 3*maxRings; i++ {
		before := w.lookups
		done := make(chan error)
		go func() {
			// A locked goroutine that exits takes its thread with it, so
			// every round runs on a new thread.
			runtime.LockOSThread()
			atomic.StoreUint32(word, 1)
			w.Arm(time.Hour)
			done <- nil
		}()
		<-done
		go func() { time.Sleep(time.Millisecond); wake(word) }()
		if err := await(t, w, fmt.Sprintf("round %d: not woken", i)); err != nil {
			t.Fatal(err)
		}
		if n := w.Rings(); n > maxRings {
			t.Fatalf("%d rings, want at most %d", n, maxRings)
		}
		if w.lookups != before+1 {
			t.Fatalf("round %d: %d ring lookups on a new thread, want 1 (the last Arm's ring refused)", i, w.lookups-before)
		}
	}
}

// TestSameThreadNoLookup: Arm on the thread of the last Arm uses its ring
// without asking which thread it runs on (a gettid per wake-up).
func TestSameThreadNoLookup(t *testing.T) {
	word := new(uint32)
	w := start(t, word)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	atomic.StoreUint32(word, 1)
	w.Arm(time.Hour) // the thread's ring, looked up unless Start ran here
	before := w.lookups
	for i := 0; i < 50; i++ {
		wake(word)
		if err := w.Await(); err != nil {
			t.Fatal(err)
		}
		atomic.StoreUint32(word, 1)
		w.Arm(time.Hour)
	}
	if n := w.lookups - before; n != 0 {
		t.Fatalf("%d ring lookups in 50 Arms on one thread, want 0", n)
	}
}

// TestRingFailure: a ring that cannot be set up after Start (as when the
// process is out of descriptors) makes Await fail with ErrRing at once,
// rather than sleep without anything to wake it.
func TestRingFailure(t *testing.T) {
	word := new(uint32)
	*word = 1
	w := start(t, word)
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // a new thread: a new ring is needed
		FailForTest.Store(true)
		w.Arm(time.Hour)
		done <- w.Await()
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrRing) {
			t.Fatalf("Await with a failed ring: %v, want ErrRing", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Await slept with a failed ring")
	}
}

// TestWordCutUnderAwait: the word lives in a file a hostile writer may
// truncate; Await then answers instead of crashing the process on SIGBUS
// (the caller's guarded read reports the damage).
func TestWordCutUnderAwait(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "word")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	word := (*uint32)(unsafe.Pointer(&m[0]))
	atomic.StoreUint32(word, 1)
	w := start(t, word)
	w.Arm(time.Hour)
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if err := await(t, w, "Await did not answer after its word's page was cut"); err != nil {
		t.Fatal(err)
	}
}

// TestWaitDoesNotAllocate: a sleep and its wake-up (here the deadline)
// allocate nothing: the host does one per event, and an allocation per
// wake-up was the only one on its path (the read callback, once built per
// Await).
func TestWaitDoesNotAllocate(t *testing.T) {
	word := new(uint32)
	*word = 1
	w := start(t, word)
	w.Arm(time.Millisecond) // the first Arm on a thread sets a ring up
	if err := w.Await(); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread() // one thread, one ring: what is measured is the steady state
	defer runtime.UnlockOSThread()
	allocs := testing.AllocsPerRun(20, func() {
		w.Arm(200 * time.Microsecond)
		if err := w.Await(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per sleep, want 0", allocs)
	}
}

// TestTickDisarmedByArm: the windows' timer stops at Arm, and ticks it
// had made but nobody read do not end the next window early (each would
// be a pass with nothing gathered).
func TestTickDisarmedByArm(t *testing.T) {
	word := new(uint32)
	*word = 1
	w := start(t, word)
	w.Tick(time.Millisecond)
	for i := 0; i < 3; i++ {
		if err := w.Await(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond) // five ticks, not read
	w.Arm(20 * time.Millisecond)
	t0 := time.Now()
	if err := w.Await(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 20*time.Millisecond {
		t.Fatalf("the sleep after the windows ended after %v, before its deadline", d)
	}
	w.Tick(30 * time.Millisecond)
	t0 = time.Now()
	if err := w.Await(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 30*time.Millisecond {
		t.Fatalf("the first window of 30ms ended after %v", d)
	}
}

// TestTickGridShifted: the kernel's ticks fall up to the time timerfd_settime
// took after the grid Await counts from, and a periodic timerfd ticks again
// only once read. Here that gap is 4 ms of a 10 ms period, and an Await
// starts in it, after a grid point the kernel has not reached: an Await
// that took the grid for the kernel's, and so left a tick unread, would
// never return again.
func TestTickGridShifted(t *testing.T) {
	word := new(uint32)
	*word = 1
	w := start(t, word)
	testHookSetTimer = func() { time.Sleep(4 * time.Millisecond) }
	defer func() { testHookSetTimer = nil }()
	const period = 10 * time.Millisecond
	w.Tick(period)
	if err := await(t, w, "the first window never ended"); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 12; i += 3 {
		// Just past grid point i, before the kernel's tick i; then two
		// windows back to back.
		time.Sleep(time.Until(w.tickFrom.Add(time.Duration(i)*period + time.Millisecond)))
		for j := 0; j < 3; j++ {
			t0 := time.Now()
			if err := await(t, w, fmt.Sprintf("window %d+%d never ended", i, j)); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(t0); d > 2*period {
				t.Fatalf("window %d+%d ended after %v, period %v", i, j, d, period)
			}
		}
	}
}

// TestTickDeliveredLate: a tick may reach the timerfd after the clock
// passed its grid point: a timer interrupt comes late, in a virtual
// machine by tens of microseconds, and tapes-host's paced naps tick every
// 64 µs. Here every tick comes 4 ms late, of a 10 ms period (the hook
// moves the grid Await counts from 4 ms earlier), and an Await starts
// after a grid point, before its tick: its read finds none, and an Await
// that then took the next grid point for a bound would skip the late
// tick's signal unread, and never return again (BenchmarkTransportE2E's
// host hung so in one run of ten).
func TestTickDeliveredLate(t *testing.T) {
	word := new(uint32)
	*word = 1
	w := start(t, word)
	const period, late = 10 * time.Millisecond, 4 * time.Millisecond
	testHookTickGrid = func(from, to time.Time) (time.Time, time.Time) { return from.Add(-late), to.Add(-late) }
	defer func() { testHookTickGrid = nil }()
	w.Tick(period)
	if err := await(t, w, "the first window never ended"); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 8; i++ {
		// Just past grid point i, before its tick.
		time.Sleep(time.Until(w.tickFrom.Add(time.Duration(i)*period + time.Millisecond)))
		t0 := time.Now()
		if err := await(t, w, fmt.Sprintf("window %d never ended", i)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d > 2*period {
			t.Fatalf("window %d ended after %v, period %v", i, d, period)
		}
	}
}

// TestWakeDuringArm: wake-ups that come while Arm submits the wait (when
// the ring's eventfd signals are off) or just after are never lost.
func TestWakeDuringArm(t *testing.T) {
	word := new(uint32)
	w := start(t, word)
	for i := 0; i < 2000; i++ {
		atomic.StoreUint32(word, 1)
		go func() {
			for range i % 64 {
				runtime.Gosched()
			}
			wake(word)
		}()
		w.Arm(time.Hour)
		if err := await(t, w, fmt.Sprintf("wake-up %d lost", i)); err != nil {
			t.Fatal(err)
		}
		if atomic.LoadUint32(word) != 0 {
			t.Fatalf("Await %d returned with the word up", i)
		}
	}
}

// TestWakeStress drives the Waiter as the host does, against a waker that
// wakes it as workers do at random moments, for a second: sleeps with a
// deadline an hour away (a lost wake-up is a sleep that never ends),
// sleeps with one deadline kept across them (the host's next liveness
// check), and coalescing windows in between, from whatever threads the
// goroutine runs on. Every sleep must end once the word is down.
func TestWakeStress(t *testing.T) {
	word := new(uint32)
	w := start(t, word)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		runtime.LockOSThread()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			time.Sleep(time.Duration(i%7) * 300 * time.Microsecond)
			if atomic.CompareAndSwapUint32(word, 1, 0) {
				syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(word)), 1 /* FUTEX_WAKE */, 1<<30, 0, 0, 0)
			}
		}
	}()
	live := time.Now()
	end := time.Now().Add(time.Second)
	early, sleeps := 0, 0
	for i := 0; time.Now().Before(end); i++ {
		if i%5 == 4 {
			w.Tick(time.Duration(1+i%3) * 500 * time.Microsecond)
			for range 1 + i%3 {
				if err := await(t, w, fmt.Sprintf("window %d never ended", i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		atomic.StoreUint32(word, 1)
		d := time.Hour
		if i%2 == 1 {
			// Deadlines about when the waker wakes: timeouts fire as Arm
			// cancels them.
			if time.Now().After(live) {
				live = time.Now().Add(time.Duration(i%5) * 400 * time.Microsecond)
			}
			d = time.Until(live)
		}
		w.Arm(d)
		if err := await(t, w, fmt.Sprintf("sleep %d (deadline %v) never ended", i, d)); err != nil {
			t.Fatal(err)
		}
		sleeps++
		if atomic.LoadUint32(word) == 1 && (d == time.Hour || time.Now().Before(live)) {
			early++ // a completion left to post: allowed, and rare
		}
		if i%3 == 0 {
			runtime.Gosched()
		}
	}
	if early > sleeps/10 {
		t.Fatalf("%d of %d sleeps ended with the word up before their deadline", early, sleeps)
	}
}

// TestLateWakeTakesNextWait: a worker stores 0 and is slow to call
// FUTEX_WAKE; the host sees the word down, drains, raises the word and
// arms a new wait, which the late FUTEX_WAKE then completes with the word
// up. Its completion, left on the ring, keeps every later one from
// signalling the eventfd (only the first queued does), so an Await that
// took it for nothing slept through every later wake-up and its own
// deadline. Await answers it instead, and the next Arm posts it.
func TestLateWakeTakesNextWait(t *testing.T) {
	word := new(uint32)
	w := start(t, word)
	runtime.LockOSThread() // one ring: the late wake-up must find the next wait
	defer runtime.UnlockOSThread()
	*word = 1
	w.Arm(time.Hour)
	atomic.StoreUint32(word, 0) // the worker's store; its FUTEX_WAKE comes late
	if err := await(t, w, "the word down did not end the sleep"); err != nil {
		t.Fatal(err)
	}
	atomic.StoreUint32(word, 1)
	w.Arm(time.Hour)
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(word)), 1 /* FUTEX_WAKE */, 1<<30, 0, 0, 0) // the late wake-up
	time.Sleep(10 * time.Millisecond)                                                                      // its completion queued on the ring
	go func() {
		time.Sleep(50 * time.Millisecond)
		wake(word) // the next worker
	}()
	for i := 0; atomic.LoadUint32(word) == 1; i++ {
		if i == 3 {
			t.Fatal("Await keeps answering with the word up")
		}
		if err := await(t, w, "the next worker's wake-up was lost"); err != nil {
			t.Fatal(err)
		}
		if atomic.LoadUint32(word) == 1 {
			w.Arm(time.Hour) // as the host does after a sleep that ended for nothing
		}
	}
}

// TestWakeInsideEnter: a FUTEX_WAKE that comes while Arm's io_uring_enter
// runs can complete the wait that call has just submitted, and the same
// call posts that completion with the eventfd's signals off: the ring then
// has no wait in flight and nothing to signal, and an Await that parked
// slept through every later wake-up, to its deadline. A worker's late
// FUTEX_WAKE can land there; one that wakes the host in a loop without
// storing 0 lands there within a few hundred Arms. Await answers at once
// instead, and the caller's next Arm submits a wait again.
func TestWakeInsideEnter(t *testing.T) {
	word := new(uint32)
	w := start(t, word)
	runtime.LockOSThread() // one ring, which the spammer's wake-ups find
	defer runtime.UnlockOSThread()
	stop := make(chan struct{})
	done := make(chan struct{})
	defer func() { close(stop); <-done }()
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(word)), 1 /* FUTEX_WAKE */, 1<<30, 0, 0, 0)
		}
	}()
	for i := range 3000 {
		atomic.StoreUint32(word, 1)
		w.Arm(time.Hour)
		if err := await(t, w, fmt.Sprintf("sleep %d slept through wake-ups (no wait in flight)", i)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWaitsBounded: Arm keeps the previous wait when the word was down
// (a wake-up most likely completed it; cancelling it was a tenth of each
// io_uring_enter) and cancels it at the next Arm if it was still in
// flight. A worker that stores 0 without waking leaves every wait in
// flight: the ring must still hold at most two, which a FUTEX_WAKE counts.
func TestWaitsBounded(t *testing.T) {
	word := new(uint32)
	w := start(t, word)
	runtime.LockOSThread() // one ring
	defer runtime.UnlockOSThread()
	for i := range 100 {
		atomic.StoreUint32(word, 1)
		w.Arm(time.Hour)
		atomic.StoreUint32(word, 0) // down, and no wake-up
		if err := await(t, w, fmt.Sprintf("sleep %d did not see the word down", i)); err != nil {
			t.Fatal(err)
		}
	}
	atomic.StoreUint32(word, 1)
	w.Arm(time.Hour)
	n, _, errno := syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(word)), 1 /* FUTEX_WAKE */, 1<<30, 0, 0, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	if n > 2 {
		t.Fatalf("%d waits in flight on the word after 100 sleeps ended without a wake-up, want at most 2", n)
	}
	if err := await(t, w, "the wake-up did not end the sleep"); err != nil {
		t.Fatal(err)
	}
}
