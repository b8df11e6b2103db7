//go:build linux && cgo

package relay

/*
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

// A relay is one thread outside the Go runtime that sleeps in futex wait on
// the header's hostWait word for the host and, when woken or timed out,
// writes to an eventfd that the host's goroutine reads through the Go
// netpoller. The thread never dereferences word: it only names it to the
// kernel, which fails a futex call on a page that is gone with EFAULT.
struct relay {
	uint32_t *word; // hostWait, in the host's mapping
	int efd;        // eventfd, nonblocking; the thread writes 1 per answered request
	uint32_t seq;   // requests made; the thread waits on it (private futex)
	uint32_t stop;  // set once, by tapes_relay_join
	int64_t ns;     // the latest request: a timeout, or minus a tick period
	uint32_t unread; // 1: an answer written that Await has not read yet
	uint32_t parked; // 1: ticking stopped on an unread answer, until Await reads it
	int32_t tid;    // the thread's id, for tests
	pthread_t th;
};

static long tapes_futex(uint32_t *addr, int op, uint32_t val, const struct timespec *ts) {
	return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

static void tapes_relay_answer(struct relay *r) {
	uint64_t one = 1;
	__atomic_store_n(&r->unread, 1, __ATOMIC_SEQ_CST);
	while (write(r->efd, &one, sizeof one) < 0 && errno == EINTR) {
	}
}

static void *tapes_relay_main(void *p) {
	struct relay *r = p;
	uint32_t seen = 0;
	int64_t tick = 0; // > 0: answer every tick nanoseconds until the next request
	__atomic_store_n(&r->tid, (int32_t)syscall(SYS_gettid), __ATOMIC_SEQ_CST);
	for (;;) {
		uint32_t s = __atomic_load_n(&r->seq, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(&r->stop, __ATOMIC_SEQ_CST))
			break;
		if (s == seen) {
			// tapes_relay_join stores stop before it bumps seq, so a stop that
			// this load missed makes the wait return at once.
			if (tick > 0) {
				struct timespec ts = {tick / 1000000000, tick % 1000000000};
				if (tapes_futex(&r->seq, FUTEX_WAIT_PRIVATE, s, &ts) < 0 && errno == ETIMEDOUT) {
					if (!__atomic_load_n(&r->unread, __ATOMIC_SEQ_CST)) {
						tapes_relay_answer(r);
						continue;
					}
					// The last tick is still unread: the host is not
					// waiting for ticks (it passes back to back, or naps
					// another way, for as long as a worker makes it).
					// Stop, as a periodic timerfd does until it is read,
					// rather than wake every period for nobody. Dekker's
					// handshake with Await: it clears unread and then
					// takes parked; this sets parked and then loads
					// unread. Either this sees the read (and answers
					// the tick that is due), or Await sees parked and
					// makes a request, which ends this wait.
					__atomic_store_n(&r->parked, 1, __ATOMIC_SEQ_CST);
					if (__atomic_load_n(&r->unread, __ATOMIC_SEQ_CST))
						tapes_futex(&r->seq, FUTEX_WAIT_PRIVATE, s, NULL);
					else
						tapes_relay_answer(r);
					__atomic_store_n(&r->parked, 0, __ATOMIC_SEQ_CST);
				}
			} else {
				tapes_futex(&r->seq, FUTEX_WAIT_PRIVATE, s, NULL);
			}
			continue;
		}
		seen = s;
		int64_t ns = __atomic_load_n(&r->ns, __ATOMIC_SEQ_CST);
		if (ns < 0) {
			tick = -ns;
			continue;
		}
		tick = 0;
		struct timespec ts = {ns / 1000000000, ns % 1000000000};
		// Not private: the word is in a shared file mapping, and workers
		// wake it from other processes. It returns at once unless the
		// word is still 1 (the host's "asleep"); Close and a cancelled
		// Drain store 0 before they wake it.
		tapes_futex(r->word, FUTEX_WAIT, 1, &ts);
		tapes_relay_answer(r);
	}
	return NULL;
}

static struct relay *tapes_relay_start(uint32_t *word, int *err) {
	struct relay *r = calloc(1, sizeof *r);
	if (r == NULL) {
		*err = ENOMEM;
		return NULL;
	}
	r->word = word;
	r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (r->efd < 0) {
		*err = errno;
		free(r);
		return NULL;
	}
	// Signals are the Go runtime's business: with every signal blocked
	// here, none is delivered to this thread, and its waits are never
	// interrupted.
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	int e = pthread_create(&r->th, &attr, tapes_relay_main, r);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e != 0) {
		*err = e;
		close(r->efd);
		free(r);
		return NULL;
	}
	return r;
}

// tapes_relay_join ends the thread and waits for it. The caller has stored
// 0 in the word and woken it, so a wait in progress or about to start
// returns at once. The eventfd stays open, and the struct allocated: the
// Go side owns the one, and Await may still touch the other until the
// eventfd is closed (then tapes_relay_free).
static void tapes_relay_join(struct relay *r) {
	__atomic_store_n(&r->stop, 1, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&r->seq, 1, __ATOMIC_SEQ_CST);
	tapes_futex(&r->seq, FUTEX_WAKE_PRIVATE, 1, NULL);
	pthread_join(r->th, NULL);
}

static void tapes_relay_free(struct relay *r) { free(r); }
*/
import "C"

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Available: this build can wait outside the Go scheduler.
const Available = true

// Relay waits in futex wait on hostWait in a thread the Go runtime does not
// know, and answers through an eventfd the host reads with the netpoller.
// A goroutine blocked in futex(2) keeps its P in a system call, which keeps
// the runtime's monitor thread polling every 20 µs and hands the P off
// after 10 ms; woken from epoll instead, the process sleeps like any idle
// Go server (docs/RATIONALE.md, "Polling without burning a core").
//
// Arm and Await make no system call that the runtime is told about (they
// use syscall.RawSyscall, and the netpoller to block): a cgo call or a
// syscall.Syscall while every P is idle wakes that monitor thread from its
// deep sleep, and it then polls for a while, two more wake-ups per event.
// Both calls they make cannot block (a futex wake, a nonblocking read).
type Relay struct {
	c      *C.struct_relay
	seq    *uint32
	ns     *int64
	unread *uint32
	parked *uint32
	f      *os.File // the eventfd
	rc     syscall.RawConn
	buf    [8]byte
	// stopped is set before Stop closes the eventfd: RawConn reports the
	// closing with an error of the internal poll package.
	stopped atomic.Bool
}

// Start starts the thread that will wait on word (a futex word in a
// shared mapping) when asked.
func Start(word *uint32) (*Relay, error) {
	var e C.int
	c := C.tapes_relay_start((*C.uint32_t)(unsafe.Pointer(word)), &e)
	if c == nil {
		return nil, fmt.Errorf("wake-up relay: %w", syscall.Errno(e))
	}
	// os.NewFile sees the nonblocking descriptor and reads it through the
	// netpoller.
	f := os.NewFile(uintptr(c.efd), "tapes-relay-eventfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		C.tapes_relay_join(c)
		C.tapes_relay_free(c)
		return nil, fmt.Errorf("wake-up relay: %w", err)
	}
	return &Relay{c: c, seq: (*uint32)(unsafe.Pointer(&c.seq)), ns: (*int64)(unsafe.Pointer(&c.ns)),
		unread: (*uint32)(unsafe.Pointer(&c.unread)), parked: (*uint32)(unsafe.Pointer(&c.parked)), f: f, rc: rc}, nil
}

// Arm asks the thread to sleep on the word for at most d. It does not block;
// the host calls it under its lock, so that Close cannot free the relay
// in between.
func (r *Relay) Arm(d time.Duration) { r.request(max(int64(d), 0)) }

// Tick asks the thread to answer every d, without looking at the word,
// until the next request: the host's coalescing windows, two thread
// wake-ups each (this one's timeout, the netpoller's), where a Go timer
// costs the runtime a few more (netpollBreak, spinning Ms). Answers that
// Await has not read add up to one, and a tick that finds the last one
// unread stops the ticking until Await reads it: a host kept from
// awaiting (passing back to back, or napping on a Go timer while a
// worker scribbles) costs the thread one wake-up, not one a period.
func (r *Relay) Tick(d time.Duration) { r.request(-max(int64(d), 1)) }

func (r *Relay) request(ns int64) {
	atomic.StoreInt64(r.ns, ns)
	atomic.AddUint32(r.seq, 1)
	syscall.RawSyscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(r.seq)), futexWakePrivate, 1, 0, 0, 0)
}

const futexWakePrivate = 1 | 128 // FUTEX_WAKE | FUTEX_PRIVATE_FLAG

// Await blocks until the thread answers the request Arm made (the word was
// woken, or the timeout passed) or Tick's next tick. It fails
// (os.ErrClosed) once Stop has closed the eventfd.
func (r *Relay) Await() error {
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			_, _, errno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
			if errno == 0 {
				r.read()
			}
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	})
	if err != nil {
		if r.stopped.Load() {
			return os.ErrClosed
		}
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// read tells the thread that its answer was read: a ticking thread that
// stopped on it ticks again (see Tick); a request made since has already
// woken it. It runs inside the eventfd's read callback, which Stop's close
// of the eventfd waits for before the thread's struct is freed.
func (r *Relay) read() {
	atomic.StoreUint32(r.unread, 0)
	if atomic.SwapUint32(r.parked, 0) == 1 {
		if ns := atomic.LoadInt64(r.ns); ns < 0 {
			r.request(ns)
		}
	}
}

// TID returns the thread's id once it has started (0 before), so that
// tests can see it in /proc/self/task.
func (r *Relay) TID() int { return int(atomic.LoadInt32((*int32)(unsafe.Pointer(&r.c.tid)))) }

// Stop ends the thread and closes the eventfd, which makes an await in
// progress return. The caller has stored 0 in the word and woken it, so
// that a wait in progress or about to start returns at once (a wait on a
// page cut from the file under the host may last its timeout).
func (r *Relay) Stop() {
	C.tapes_relay_join(r.c)
	r.stopped.Store(true)
	// Close waits for an Await inside its read callback (a nonblocking
	// descriptor's close waits for every operation in flight), which may
	// still write the struct.
	r.f.Close()
	C.tapes_relay_free(r.c)
	r.c = nil
}
