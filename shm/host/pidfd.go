package host

import (
	"errors"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/tapes-go/tapes/shm/internal/layout"
	"github.com/tapes-go/tapes/shm/internal/sys"
)

// Liveness by pidfd. Reading /proc/<pid>/stat for every worker at every
// check costs an open, a read and a close each (~10 µs): 200 workers every
// 250 ms were ~1% of a core by themselves. A pidfd (Linux 5.3) becomes
// readable when its process exits, zombie included, so the check is one
// poll(2) over the workers' pidfds. The start time is compared once, after
// the pidfd is open: a pid reused before the open shows another start time
// and the slot goes to /proc checks (which find its worker dead); one that
// matches proves the pidfd names the worker, since the worker held that
// pid from before the open to after the read. Where a pidfd cannot be had
// (no descriptors left, /proc unreadable, an older kernel) the slot is
// checked through /proc as before, with its "unknown" answers.

// pidfdCap is how many pidfds a host holds at most: half its descriptor
// limit, so that draining 4096 workers never starves the rest of the
// process (reporters, plugins) of descriptors.
func pidfdCap() int {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	return int(min(rl.Cur/2, layout.MaxSlots))
}

// watch opens a pidfd for slot i's worker, if it can.
func (h *Host) watch(i int, hs *hslot) {
	if hs.pidfd != 0 || h.pidfds >= h.pidfdCap || hs.pid == 0 || hs.pid > pidLimit {
		return
	}
	fd, err := unix.PidfdOpen(int(hs.pid), 0)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
			h.pidfdCap = 0 // not on this kernel or sandbox: /proc from now on
		}
		return // ESRCH: gone, and the /proc check says so; EMFILE: /proc for now
	}
	start := atomic.LoadUint64(h.slotU64(i, slotStart))
	s, ok, err := procStart(int(hs.pid))
	if err != nil || !ok || (start != 0 && s != start) {
		unix.Close(fd)
		return
	}
	hs.pidfd = fd + 1
	h.pidfds++
}

// unwatch closes slot's pidfd.
func (h *Host) unwatch(hs *hslot) {
	if hs.pidfd != 0 {
		unix.Close(hs.pidfd - 1)
		hs.pidfd, hs.exited = 0, false
		h.pidfds--
	}
}

// pollExits marks the watched slots whose worker exited, with one poll(2).
// If poll itself fails the pidfds are given up, and /proc answers.
func (h *Host) pollExits() {
	if h.pidfds == 0 {
		// No worker watched: an idle host with 4096 slots spent a quarter
		// of its CPU in the two loops below, four times a second.
		return
	}
	fds := h.polls[:0]
	for i := range h.slots {
		if hs := &h.slots[i]; hs.pidfd != 0 {
			fds = append(fds, unix.PollFd{Fd: int32(hs.pidfd - 1), Events: unix.POLLIN})
		}
	}
	h.polls = fds
	if len(fds) == 0 {
		return
	}
	var err error
	for {
		if _, err = sys.QuietPoll(fds); !errors.Is(err, unix.EINTR) {
			break
		}
	}
	k := 0
	for i := range h.slots {
		hs := &h.slots[i]
		if hs.pidfd == 0 {
			continue
		}
		if err != nil {
			h.unwatch(hs)
			continue
		}
		hs.exited = fds[k].Revents != 0 // POLLIN, or POLLHUP/POLLERR: not a live process
		k++
	}
}

// running reports whether slot i's worker still runs: by its pidfd when
// the host holds one, else through /proc (alive).
func (h *Host) running(i int, hs *hslot) bool {
	if hs.pidfd != 0 {
		return !hs.exited
	}
	if h.watch(i, hs); hs.pidfd != 0 {
		return true // a descriptor was free again, and watch checked the start time
	}
	return h.alive(hs.pid, atomic.LoadUint64(h.slotU64(i, slotStart)))
}
