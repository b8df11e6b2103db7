//go:build linux && (amd64 || arm64)

package sys

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// QuietFstat and QuietStat are fstat(2) and fstatat(2) made with
// RawSyscall, which the Go runtime is not told about: the host checks its
// file every second even when idle, and a system call the runtime is told
// about while every P is idle wakes its monitor thread (sysmon), which then
// polls for a while: a fifth of an idle host's CPU (perf, 2026-12-02).
// Metadata of a local file answers without blocking; path must end in a
// NUL byte (PathZ).
func QuietFstat(fd int, st *syscall.Stat_t) error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_FSTAT, uintptr(fd), uintptr(unsafe.Pointer(st)), 0); e != 0 {
		return e
	}
	return nil
}

// QuietStat: see QuietFstat; follow false does not follow a final symlink
// (lstat).
func QuietStat(path []byte, follow bool, st *syscall.Stat_t) error {
	flags := uintptr(unix.AT_SYMLINK_NOFOLLOW)
	if follow {
		flags = 0
	}
	if len(path) == 0 || path[len(path)-1] != 0 {
		return syscall.EINVAL
	}
	atFDCWD := unix.AT_FDCWD
	_, _, e := syscall.RawSyscall6(unix.SYS_NEWFSTATAT, uintptr(atFDCWD), uintptr(unsafe.Pointer(&path[0])), uintptr(unsafe.Pointer(st)), flags, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// QuietPoll is poll(2) with a zero timeout (ppoll), made with RawSyscall
// as QuietFstat is: the liveness check asks its workers' pidfds whether
// they exited four times a second, and unix.Poll woke the runtime's
// monitor thread each time (tracefs, 2026-12-02: a futex wake-up and a few
// sysmon sleeps per check). A zero timeout never blocks.
func QuietPoll(fds []unix.PollFd) (int, error) {
	if len(fds) == 0 {
		return 0, nil
	}
	var ts unix.Timespec
	n, _, e := syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)), uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
