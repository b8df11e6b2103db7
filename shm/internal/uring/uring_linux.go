//go:build linux

package uring

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// The kernel's ABI (include/uapi/linux/io_uring.h), named once.
const (
	sysSetup    = 425 // io_uring_setup: the same number on every architecture
	sysEnter    = 426
	sysRegister = 427

	offSQRing = 0
	offSQEs   = 0x10000000

	setupTaskrunFlag  = 1 << 9  // Linux 5.19
	setupSingleIssuer = 1 << 12 // Linux 6.0
	sqTaskrun         = 1 << 2  // IORING_SQ_TASKRUN, in the SQ ring's flags: deferred completions wait to be posted
	setupDeferTaskrun = 1 << 13 // Linux 6.1
	enterGetEvents    = 1
	featSingleMmap    = 1 << 0
	cqEventfdDisabled = 1 << 0 // IORING_CQ_EVENTFD_DISABLED, in the CQ ring's flags (Linux 5.8)

	registerEventfd = 4
	registerProbe   = 8
	opSupported     = 1

	opTimeout     = 11
	opAsyncCancel = 14
	opFutexWait   = 51 // Linux 6.7

	futex2SizeU32 = 0x02 // shared (no FUTEX2_PRIVATE): the word is in a file mapping
	futexMatchAny = 0xffffffff

	entries   = 8
	sqeSize   = 64
	cqeSize   = 16
	probeOps  = 256
	probeSize = 16 + probeOps*8

	efdNonblock = 0x800   // EFD_NONBLOCK = O_NONBLOCK
	efdCloexec  = 0x80000 // EFD_CLOEXEC = O_CLOEXEC
	// timerfd_create(2)'s flags are the same bits (TFD_NONBLOCK,
	// TFD_CLOEXEC); CLOCK_MONOTONIC is 1.
	clockMonotonic = 1
)

// maxRings bounds the rings a Waiter keeps, one per OS thread its caller
// has run on (the Go runtime has a handful): past it, the least recently
// used ring is closed, which cancels what it had in flight.
const maxRings = 8

// user_data of a request: its kind in the low bits, a sequence number above.
const (
	kindFutex = iota
	kindTimer
	kindCancel
	kindBits = 2
)

type sqOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqOffsets
	cqOff                                                                  cqOffsets
}

// ring is one io_uring set up by, and usable only from, the OS thread tid:
// with IORING_SETUP_DEFER_TASKRUN a completion is queued on the ring and
// signals the Waiter's eventfd at once, from the waker's own system call,
// and only the thread that set the ring up may post it (IORING_SETUP_
// SINGLE_ISSUER). Without it the kernel would post each completion by
// interrupting the submitting thread (task work), a second wake-up.
type ring struct {
	fd             int
	tid            int
	mem, sqeMem    []byte
	sqHead, sqTail *uint32
	sqFlags        *uint32
	sqMask         uint32
	sqArray        unsafe.Pointer
	cqHead, cqTail *uint32
	cqFlags        *uint32
	cqMask         uint32
	cqes           unsafe.Pointer
	live           uint64    // user_data of this ring's futex wait in flight; 0: none
	prev           uint64    // an older wait of this ring maybe still in flight (see submit); 0: none
	timer          uint64    // user_data of this ring's deadline timeout in flight; 0: none
	timerAt        time.Time // when it fires
	used           uint64    // when last used, in Waiter.seq
}

// Waiter waits on a futex word through io_uring, answering through one
// eventfd that the Go netpoller watches. Arm, Tick and Await are made by one
// goroutine at a time; Stop may run against Await.
type Waiter struct {
	word *uint32

	// The netpoller wakes Await through the eventfd (a completion) and
	// the timerfd (a window's tick), and Await answers by the word and
	// the clock, not by what the descriptors hold. The eventfd is never
	// read: emptying it cost three system calls per wake-up (the signal,
	// the stale signal of the host's own io_uring_enter, and the EAGAIN
	// before parking), and the netpoller's edge-triggered epoll reports
	// every signal whatever the counter holds, so leaving it to grow
	// (2^64 signals) loses none. The timerfd is read once a window, since
	// that read re-arms its periodic timer. Both callbacks are built
	// once: one made per Await is an allocation per wake-up.
	efd   int
	f     *os.File
	rc    syscall.RawConn
	ready func(fd uintptr) bool

	tfd      int
	tf       *os.File
	trc      syscall.RawConn
	ticked   func(fd uintptr) bool
	tbuf     [8]byte
	period   time.Duration // the timerfd's period; 0: disarmed
	tickFrom time.Time     // just before it was armed: the kernel's ticks fall at start + k·period,
	tickTo   time.Time     // start being between tickFrom and tickTo (just after)
	nextTick time.Time     // no tick comes before; past it, Await reads the timerfd

	mu       sync.Mutex // rings, against Stop
	rings    []*ring
	cur      *ring // the ring of the last Arm
	down     bool  // the last Await answered because the word was down
	seq      uint64
	ts       [2]int64 // a timeout's timespec: the kernel copies it when the request is submitted
	deadline time.Time
	tick     time.Duration // > 0: Await answers every tick until the next Arm
	lookups  int           // ringHere's calls, for tests: submit makes none on the thread of the last Arm
	failed   error
	stopped  atomic.Bool
}

// ErrUnsupported: this kernel cannot wait on a futex through io_uring.
var ErrUnsupported = errors.New("io_uring futex wait unsupported")

// Refused reports whether Start failed because a seccomp filter refused
// io_uring (EPERM: Docker's and containerd's default profiles do since
// 2023), rather than because the kernel lacks it.
func Refused(err error) bool { return errors.Is(err, syscall.EPERM) }

// ErrRing: a ring could not be set up or used after Start (out of
// descriptors or memory): the caller falls back to another way to wait.
var ErrRing = errors.New("io_uring waiter failed")

// FailForTest makes the next use of a ring fail, as running out of
// descriptors would: for the caller's fallback tests.
var FailForTest atomic.Bool

// Start sets up a Waiter for word, a futex word in a shared mapping. It
// fails with ErrUnsupported where the kernel has no io_uring futex wait
// (before Linux 6.7), no deferred task running (before 6.1), or refuses
// io_uring (a seccomp filter, kernel.io_uring_disabled).
func Start(word *uint32) (*Waiter, error) {
	efd, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, efdNonblock|efdCloexec, 0)
	if errno != 0 {
		return nil, fmt.Errorf("eventfd: %w", errno)
	}
	tfd, _, errno := syscall.RawSyscall(syscall.SYS_TIMERFD_CREATE, clockMonotonic, efdNonblock|efdCloexec, 0)
	if errno != 0 {
		syscall.Close(int(efd))
		return nil, fmt.Errorf("timerfd: %w (%w)", errno, ErrRing)
	}
	w := &Waiter{word: word, efd: int(efd), tfd: int(tfd)}
	w.ready = func(uintptr) bool {
		if w.wordDown() {
			w.down = true
			return true
		}
		return !time.Now().Before(w.deadline) || w.stale()
	}
	w.ticked = func(fd uintptr) bool {
		if w.stopped.Load() {
			return true
		}
		now := time.Now()
		if now.Before(w.nextTick) {
			return false // no tick can have come since the last read
		}
		// A periodic timerfd's timer is re-armed only by the read of its
		// expirations (timerfd_read), so every tick must be read: a
		// signal that finds the clock before nextTick would leave it
		// stopped for good. nextTick is therefore a bound the kernel's
		// next tick cannot precede, never an estimate, and only a read
		// that took a tick moves it: the kernel then re-armed the timer
		// past the read, on its grid. A read that found none says
		// nothing of when the next comes: a tick whose grid point the
		// clock has passed can still be on its way (a timer interrupt
		// comes late, in a virtual machine by tens of microseconds), and
		// its signal must then be read (TestTickDeliveredLate).
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&w.tbuf[0])), uintptr(len(w.tbuf)))
		if errno != 0 || n != 8 {
			return false
		}
		w.nextTick = w.tickBound(now)
		return true
	}
	runtime.LockOSThread()
	w.mu.Lock()
	_, err := w.ringHere()
	w.mu.Unlock()
	runtime.UnlockOSThread()
	if err != nil {
		syscall.Close(w.efd)
		syscall.Close(w.tfd)
		return nil, err
	}
	// Nonblocking, so os.NewFile hands them to the netpoller.
	w.f = os.NewFile(uintptr(w.efd), "tapes-uring-eventfd")
	w.tf = os.NewFile(uintptr(w.tfd), "tapes-uring-timerfd")
	if w.rc, err = w.f.SyscallConn(); err == nil {
		w.trc, err = w.tf.SyscallConn()
	}
	if err != nil {
		w.Stop()
		return nil, err
	}
	return w, nil
}

// ringHere returns the ring of the calling OS thread, setting one up if
// needed. The caller has locked the goroutine to its thread and holds w.mu.
func (w *Waiter) ringHere() (*ring, error) {
	if FailForTest.CompareAndSwap(true, false) {
		return nil, fmt.Errorf("io_uring_setup: %w (%w)", syscall.EMFILE, ErrRing)
	}
	w.lookups++
	tid, _, _ := syscall.RawSyscall(syscall.SYS_GETTID, 0, 0, 0)
	w.seq++ // the ring's age
	for _, r := range w.rings {
		if r.tid == int(tid) {
			r.used = w.seq
			return r, nil
		}
	}
	if len(w.rings) == maxRings {
		old := 0
		for i, r := range w.rings {
			if r.used < w.rings[old].used {
				old = i
			}
		}
		w.rings[old].close()
		w.rings = append(w.rings[:old], w.rings[old+1:]...)
	}
	r, err := newRing(w.efd)
	if err != nil {
		return nil, err
	}
	r.tid, r.used = int(tid), w.seq
	w.rings = append(w.rings, r)
	return r, nil
}

func newRing(efd int) (*ring, error) {
	p := params{flags: setupSingleIssuer | setupDeferTaskrun | setupTaskrunFlag}
	fd, _, errno := syscall.RawSyscall(sysSetup, entries, uintptr(unsafe.Pointer(&p)), 0)
	if errno == syscall.EMFILE || errno == syscall.ENFILE || errno == syscall.ENOMEM {
		return nil, fmt.Errorf("io_uring_setup: %w (%w)", errno, ErrRing)
	}
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w (%w)", errno, ErrUnsupported)
	}
	r := &ring{fd: int(fd)}
	fail := func(err error) (*ring, error) {
		r.close()
		return nil, err
	}
	if !supported(r.fd) {
		return fail(fmt.Errorf("io_uring has no futex wait (Linux < 6.7): %w", ErrUnsupported))
	}
	if p.features&featSingleMmap == 0 {
		return fail(fmt.Errorf("io_uring without a single ring mapping (Linux < 5.4): %w", ErrUnsupported))
	}
	size := max(int(p.sqOff.array+p.sqEntries*4), int(p.cqOff.cqes+p.cqEntries*cqeSize))
	var err error
	if r.mem, err = syscall.Mmap(r.fd, offSQRing, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		return fail(fmt.Errorf("io_uring rings: %w (%w)", err, ErrRing))
	}
	if r.sqeMem, err = syscall.Mmap(r.fd, offSQEs, int(p.sqEntries)*sqeSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE); err != nil {
		return fail(fmt.Errorf("io_uring submission entries: %w (%w)", err, ErrRing))
	}
	at := func(off uint32) unsafe.Pointer { return unsafe.Pointer(&r.mem[off]) }
	r.sqHead, r.sqTail = (*uint32)(at(p.sqOff.head)), (*uint32)(at(p.sqOff.tail))
	r.sqFlags = (*uint32)(at(p.sqOff.flags))
	r.sqMask, r.sqArray = *(*uint32)(at(p.sqOff.ringMask)), at(p.sqOff.array)
	r.cqHead, r.cqTail = (*uint32)(at(p.cqOff.head)), (*uint32)(at(p.cqOff.tail))
	r.cqFlags = (*uint32)(at(p.cqOff.flags))
	r.cqMask, r.cqes = *(*uint32)(at(p.cqOff.ringMask)), at(p.cqOff.cqes)
	fdv := int32(efd)
	if _, _, errno := syscall.RawSyscall6(sysRegister, uintptr(r.fd), registerEventfd, uintptr(unsafe.Pointer(&fdv)), 1, 0, 0); errno != 0 {
		return fail(fmt.Errorf("io_uring eventfd: %w (%w)", errno, ErrRing))
	}
	return r, nil
}

func supported(fd int) bool {
	var probe [probeSize]byte
	_, _, errno := syscall.RawSyscall6(sysRegister, uintptr(fd), registerProbe, uintptr(unsafe.Pointer(&probe[0])), probeOps, 0, 0)
	if errno != 0 || opFutexWait > int(probe[0]) {
		return false
	}
	flags := *(*uint16)(unsafe.Pointer(&probe[16+opFutexWait*8+2]))
	return flags&opSupported != 0
}

func (r *ring) close() {
	if r.mem != nil {
		syscall.Munmap(r.mem)
	}
	if r.sqeMem != nil {
		syscall.Munmap(r.sqeMem)
	}
	syscall.Close(r.fd)
}

// Arm asks for Await to return once the word is no longer 1 (a worker, or
// the host's own wake, stored 0 and woke it), or d has passed.
//
// The calling thread's ring keeps one futex wait in flight until a wake-up
// completes it, and one deadline timeout, replaced at every Arm. A wait
// is not cancelled when its deadline passes: only its ring's thread could
// post the cancellation, and until then the kernel would keep the wait on
// the futex, where a worker's FUTEX_WAKE would complete it without a
// signal. Waits left in flight on other threads' rings are woken with this
// one (workers wake every waiter: docs/shm-layout.md) and are harmless.
func (w *Waiter) Arm(d time.Duration) {
	w.tick = 0
	if w.period != 0 {
		w.setTimer(0) // disarmed: its ticks would wake the sleep for nothing
	}
	w.deadline = time.Now().Add(d)
	w.submit(d)
}

// keepTimer is how much later than asked a deadline timeout already in
// flight may fire and still be kept: the host's deadline is its next
// liveness check, the same instant for every sleep until then, and not
// replacing the timeout spares the kernel two requests per wake-up.
const keepTimer = time.Millisecond

// submit makes sure, on the calling thread's ring, of a futex wait in flight
// and of one timeout of d.
func (w *Waiter) submit(d time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped.Load() || w.failed != nil {
		return
	}
	// The ring of the last Arm first, without asking which thread this is
	// (gettid, a system call per wake-up): the goroutine mostly wakes on the
	// thread it slept on, and on another the kernel refuses the submission
	// before reading it (EEXIST: IORING_SETUP_SINGLE_ISSUER), which undo
	// takes back (TestRingPerThread).
	if r := w.cur; r != nil && !FailForTest.Load() {
		if err := w.submitOn(r, d); err != errNotIssuer {
			w.seq++
			r.used = w.seq
			if err != nil {
				w.failed = err
			}
			return
		}
	}
	r, err := w.ringHere()
	if err != nil {
		w.failed = err
		return
	}
	w.cur = r
	if err := w.submitOn(r, d); err != nil {
		w.failed = err
	}
}

// errNotIssuer: the ring belongs to another thread (see submit).
var errNotIssuer = errors.New("io_uring: not this ring's thread")

// submitOn is submit on ring r. If r turns out to be another thread's, it
// leaves r and w as they were and returns errNotIssuer.
func (w *Waiter) submitOn(r *ring, d time.Duration) error {
	// One system call: submit a wait, cancel the ring's older one unless a
	// wake-up most likely completed it, and its timeout unless it is
	// kept; then post whatever completed (enter), which tells whether
	// the older wait had. Woken, the word comes down before the wake-up
	// completes the wait, so the older wait is kept in prev and cancelled
	// at the next Arm if it was still in flight (a late wake-up, or a
	// worker storing 0 without one): a ring holds at most two waits. A
	// cancel per wake-up was a tenth of the host's io_uring_enter.
	undo := struct {
		prev, live, timer uint64
		timerAt, deadline time.Time
		down              bool
	}{r.prev, r.live, r.timer, r.timerAt, w.deadline, w.down}
	t := atomic.LoadUint32(r.sqTail)
	cancel := func(ud uint64) {
		r.prep(t, opAsyncCancel, 0, w.next(kindCancel), func(s []byte) { put64(s[16:], ud) })
		t++
	}
	if r.prev != 0 {
		cancel(r.prev)
		r.prev = 0
	}
	keep := r.timer != 0 && !r.timerAt.Before(w.deadline) && r.timerAt.Sub(w.deadline) < keepTimer
	if r.timer != 0 && !keep {
		cancel(r.timer)
	}
	if r.live != 0 {
		if w.down {
			r.prev = r.live
		} else {
			cancel(r.live)
		}
	}
	w.down = false
	r.live = w.next(kindFutex)
	r.prep(t, opFutexWait, 0, r.live, func(s []byte) {
		put32(s[4:], futex2SizeU32) // fd: the futex2 flags
		put64(s[8:], 1)             // addr2: the value to wait on
		put64(s[16:], uint64(uintptr(unsafe.Pointer(w.word))))
		put64(s[48:], futexMatchAny) // addr3: the mask
	})
	t++
	if keep {
		w.deadline = r.timerAt // Await's answer matches the timeout's
	} else {
		w.ts = timespec(d)
		r.timer, r.timerAt = w.next(kindTimer), time.Now().Add(d)
		r.prep(t, opTimeout, 0, r.timer, func(s []byte) {
			put64(s[16:], uint64(uintptr(unsafe.Pointer(&w.ts))))
			put32(s[24:], 1)
		})
		t++
	}
	err := w.enter(r, t)
	if err == errNotIssuer {
		r.prev, r.live, r.timer, r.timerAt = undo.prev, undo.live, undo.timer, undo.timerAt
		w.deadline, w.down = undo.deadline, undo.down
	}
	return err
}

func (w *Waiter) next(kind uint64) uint64 {
	w.seq++
	return w.seq<<kindBits | kind
}

// Tick asks for Await to return every d (a coalescing window) until the
// next Arm: the timerfd ticks with period d from the first Await, and each
// Await returns at the next tick (at once if one passed since the last).
// The ring is not touched: a futex wait a wake-up completed stays queued
// on it, unposted, until the next Arm posts it.
func (w *Waiter) Tick(d time.Duration) {
	w.tick = max(d, 1)
}

// Await blocks until the current request is answered, or returns early
// once when the ring holds a stale completion to post or no wait in flight
// (see stale), which the caller's next Arm mends. It fails with
// os.ErrClosed once Stop has run, and with ErrRing if a ring failed (the
// caller then waits another way).
func (w *Waiter) Await() error {
	if w.tick > 0 {
		return w.awaitTick()
	}
	// ready is called before the goroutine parks and after each
	// readiness: a signal that came before the call (prepareRead clears
	// the netpoller's latch) is seen in the word or the clock, and a
	// stale one (a timeout of a wait a wake-up completed first, the
	// completions the host's own io_uring_enter posted) costs a look.
	return w.poll(w.rc, w.ready)
}

// poll parks the goroutine in the netpoller on rc until done says so.
func (w *Waiter) poll(rc syscall.RawConn, done func(fd uintptr) bool) error {
	if w.failed != nil {
		return w.failed
	}
	err := rc.Read(done)
	if w.stopped.Load() {
		return os.ErrClosed
	}
	return err
}

// stale reports whether Stop has run, or the ring the last Arm used holds
// a completion not posted yet, or has no wait in flight. Only the first
// completion queued on a ring since it was last posted signals the
// eventfd, so one that came after Arm's io_uring_enter posted the ring's
// queue (a timeout firing as that call cancelled it, a wait being woken as
// it was cancelled) would keep the wake-up's completion from signalling,
// and Await would sleep through it. A FUTEX_WAKE that came during that
// call may have completed the very wait it submitted, posted by the same
// call with the signals off (a worker's late wake-up, or one waking the
// host in a loop): nothing in flight is left to answer the next wake-up
// (TestWakeInsideEnter). Either way the caller arms again, which posts
// what is queued and submits a wait. Under w.mu: Stop unmaps the rings.
func (w *Waiter) stale() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopped.Load() || w.cur != nil && (w.cur.live == 0 || atomic.LoadUint32(w.cur.sqFlags)&sqTaskrun != 0)
}

// awaitTick is Await between Tick and the next Arm: it returns at the
// timerfd's next tick, at once if one passed since the last Await (which
// then skips those it missed), reading the timerfd once a window.
func (w *Waiter) awaitTick() error {
	if w.period != w.tick {
		if err := w.setTimer(w.tick); err != nil {
			return err
		}
	}
	return w.poll(w.trc, w.ticked)
}

// tickBound is the earliest the timerfd's first tick after t can come: the
// next point of the grid tickFrom + k·period, or t itself when t lies
// where the kernel's grid, shifted by up to tickTo-tickFrom, may already
// have its next tick.
func (w *Waiter) tickBound(t time.Time) time.Time {
	k := t.Sub(w.tickFrom) / w.period
	if k >= 1 && t.Before(w.tickTo.Add(k*w.period)) {
		return t
	}
	return w.tickFrom.Add((k + 1) * w.period)
}

// testHookSetTimer runs between tickFrom and timerfd_settime: a test
// widens there the gap between the clock's grid and the kernel's.
// testHookTickGrid may move the times setTimer took around the call: a
// test moves them earlier, as if every tick were delivered that late.
var (
	testHookSetTimer func()
	testHookTickGrid func(from, to time.Time) (time.Time, time.Time)
)

// setTimer arms the timerfd to tick every d from now, or disarms it (0).
// Through the RawConn's Control, which
// holds the descriptor: Stop may close it from another goroutine while
// Await runs, and its number could then name another file. A raw call,
// as enter's.
func (w *Waiter) setTimer(d time.Duration) error {
	ts := [4]int64{} // struct itimerspec: it_interval, then it_value
	if d > 0 {
		ts[0], ts[1] = int64(d/time.Second), int64(d%time.Second)
		ts[2], ts[3] = ts[0], ts[1]
	}
	var errno syscall.Errno
	w.tickFrom = time.Now()
	if testHookSetTimer != nil {
		testHookSetTimer()
	}
	err := w.trc.Control(func(fd uintptr) {
		_, _, errno = syscall.RawSyscall6(syscall.SYS_TIMERFD_SETTIME, fd, 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	})
	w.tickTo = time.Now()
	if testHookTickGrid != nil {
		w.tickFrom, w.tickTo = testHookTickGrid(w.tickFrom, w.tickTo)
	}
	w.nextTick = w.tickFrom.Add(d)
	if w.stopped.Load() {
		return os.ErrClosed
	}
	if err == nil && errno != 0 {
		err = errno
	}
	if err != nil {
		w.failed = fmt.Errorf("timerfd_settime: %w (%w)", err, ErrRing)
		return w.failed
	}
	w.period = d
	return nil
}

// wordDown reports whether the word is no longer 1. The word is in a file
// any writer may cut under the host: a load from a page that is gone
// raises SIGBUS, which here answers at once, and the host's own guarded
// read that follows reports the damage (tests/TestShmDamageStopsHost
// crashed the host without this).
func (w *Waiter) wordDown() (down bool) {
	defer func() {
		if recover() != nil {
			down = true
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return atomic.LoadUint32(w.word) != 1
}

// enter submits the entries up to tail and, in the same call, posts what
// completed on the ring (the deferred task work), so that the ring's queue
// is empty when it returns: its next completion is the first, and signals
// the eventfd. With RawSyscall, since it cannot block, the runtime's
// monitor thread is not woken from its sleep.
//
// On amd64 (quietEnter) the ring's eventfd signals are off during the
// call: what it posts (the cancel of a wait a wake-up completed, that
// wait) would signal it, and the netpoller would wake Await once more per
// wake-up for nothing. What can complete meanwhile unsignalled is a
// wake-up (the word is down), the deadline (the clock is past it) or a
// stale completion (the ring's IORING_SQ_TASKRUN is set), all of which
// Await looks at after the signals are back on. The orders hold: a waker
// stores 0 before its FUTEX_WAKE, whose futex_wake has a full barrier
// before io_uring reads the flag; the kernel sets TASKRUN with an atomic
// OR, a full barrier on amd64 (LOCK OR) but not on arm64, where it could
// read the flag still off while Await reads TASKRUN not yet set: hence
// amd64 only. The store that turns the signals back on is a full barrier
// here (Dekker's, as in the host's wait).
const quietEnter = runtime.GOARCH == "amd64"

func (w *Waiter) enter(r *ring, tail uint32) error {
	old := atomic.LoadUint32(r.sqTail)
	atomic.StoreUint32(r.sqTail, tail)
	n := tail - old
	if quietEnter {
		atomic.StoreUint32(r.cqFlags, cqEventfdDisabled)
		defer atomic.StoreUint32(r.cqFlags, 0)
	}
	for {
		got, _, errno := syscall.RawSyscall6(sysEnter, uintptr(r.fd), uintptr(n), 0, enterGetEvents, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno == syscall.EEXIST && n == tail-old {
			// Another thread's ring: refused before anything was read
			// (see submit). Nothing of ours is in its queue then.
			atomic.StoreUint32(r.sqTail, old)
			return errNotIssuer
		}
		if errno == 0 && uint32(got) < n {
			// Left in the ring by the kernel: submit the rest.
			n -= uint32(got)
			continue
		}
		r.reap()
		if errno != 0 {
			return fmt.Errorf("io_uring_enter: %w (%w)", errno, ErrRing)
		}
		return nil
	}
}

// reap consumes the ring's completions; a wait completed, by a wake-up,
// its timeout or a cancel, is no longer live.
func (r *ring) reap() {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		ud := *(*uint64)(unsafe.Add(r.cqes, uintptr(head&r.cqMask)*cqeSize))
		switch ud {
		case r.live:
			r.live = 0
		case r.prev:
			r.prev = 0
		case r.timer:
			r.timer = 0
		}
	}
	atomic.StoreUint32(r.cqHead, head)
}

func (r *ring) prep(t uint32, op, flags byte, ud uint64, fill func([]byte)) {
	i := t & r.sqMask
	s := r.sqeMem[i*sqeSize : (i+1)*sqeSize]
	clear(s)
	s[0], s[1] = op, flags
	put64(s[32:], ud)
	fill(s)
	*(*uint32)(unsafe.Add(r.sqArray, uintptr(i)*4)) = i
}

// TID is 0: the Waiter has no thread of its own.
func (w *Waiter) TID() int { return 0 }

// Rings is how many rings the Waiter holds (for tests).
func (w *Waiter) Rings() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.rings)
}

// Stop closes the rings, which cancels what they have in flight, and the
// eventfd, which makes an Await in progress return os.ErrClosed.
func (w *Waiter) Stop() {
	w.mu.Lock()
	if w.stopped.Swap(true) {
		w.mu.Unlock()
		return
	}
	for _, r := range w.rings {
		r.close()
	}
	w.rings, w.cur = nil, nil
	w.mu.Unlock()
	if w.f != nil {
		w.f.Close()
	} else {
		syscall.Close(w.efd)
	}
	if w.tf != nil {
		w.tf.Close()
	} else {
		syscall.Close(w.tfd)
	}
}

func timespec(d time.Duration) [2]int64 {
	d = max(d, 0)
	return [2]int64{int64(d / time.Second), int64(d % time.Second)}
}

func put32(b []byte, v uint32) { *(*uint32)(unsafe.Pointer(&b[0])) = v }
func put64(b []byte, v uint64) { *(*uint64)(unsafe.Pointer(&b[0])) = v }
