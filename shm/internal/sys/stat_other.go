//go:build !(linux && (amd64 || arm64))

package sys

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// QuietFstat is syscall.Fstat where no raw fstat is wired (see stat_raw.go).
func QuietFstat(fd int, st *syscall.Stat_t) error { return syscall.Fstat(fd, st) }

// QuietStat is syscall.Stat or Lstat where no raw fstatat is wired.
func QuietStat(path []byte, follow bool, st *syscall.Stat_t) error {
	if len(path) == 0 || path[len(path)-1] != 0 {
		return syscall.EINVAL
	}
	p := string(path[:len(path)-1])
	if follow {
		return syscall.Stat(p, st)
	}
	return syscall.Lstat(p, st)
}

// QuietPoll is unix.Poll with a zero timeout where no raw ppoll is wired.
func QuietPoll(fds []unix.PollFd) (int, error) { return unix.Poll(fds, 0) }
