// Package sys holds the operating-system calls that the shm worker client
// (package shm) and the host (package shm/host) both make: opening and
// checking the file, mapping it, reading /proc for liveness, the futex
// and madvise calls.
package sys

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"syscall"
	"time"

	mmap "github.com/edsrzf/mmap-go"

	"github.com/tapes-go/tapes/shm/internal/layout"
)

// OpenFile opens an existing file without following a symlink and checks
// that it is a regular file owned by the caller. It returns its size and
// permission bits. A path naming an inherited descriptor (/proc/self/fd/N,
// /proc/<pid>/fd/N, /dev/fd/N: how a sealed memfd reaches workers) is a
// kernel link to a file already open in some process, so it is followed.
func OpenFile(path string, flag int) (*os.File, FileInfo, error) {
	nofollow := syscall.O_NOFOLLOW
	if IsFDPath(path) {
		nofollow = 0
	}
	f, err := os.OpenFile(path, flag|nofollow|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, FileInfo{}, fmt.Errorf("shm: %s is a symlink; refused: %w", path, err)
		}
		if errors.Is(err, syscall.EISDIR) {
			return nil, FileInfo{}, fmt.Errorf("%w: %s is a directory", layout.ErrNotRegular, path)
		}
		return nil, FileInfo{}, fmt.Errorf("shm: %w", err)
	}
	fi, err := CheckFile(f)
	if err != nil {
		f.Close()
		return nil, FileInfo{}, err
	}
	return f, fi, nil
}

// fdPathRE matches the paths of open descriptors that the kernel resolves
// itself.
var fdPathRE = regexp.MustCompile(`^(/proc/(self|[0-9]+)/fd|/dev/fd)/[0-9]+$`)

func IsFDPath(p string) bool { return fdPathRE.MatchString(p) }

// FileInfo is what the opener of a file checks and the host later compares.
type FileInfo struct {
	Size     int64
	Perm     uint32 // permission bits
	Dev, Ino uint64
}

func StatInfo(st *syscall.Stat_t) FileInfo {
	return FileInfo{Size: st.Size, Perm: uint32(st.Mode) & 0o7777, Dev: uint64(st.Dev), Ino: st.Ino}
}

func CheckFile(f *os.File) (FileInfo, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return FileInfo{}, fmt.Errorf("shm: fstat %s: %w", f.Name(), err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return FileInfo{}, fmt.Errorf("%w: %s", layout.ErrNotRegular, f.Name())
	}
	if int(st.Uid) != os.Getuid() {
		return FileInfo{}, fmt.Errorf("%w: %s belongs to uid %d", layout.ErrNotOwner, f.Name(), st.Uid)
	}
	return StatInfo(&st), nil
}

func MapFile(f *os.File, size int, write bool) (mmap.MMap, error) {
	prot := mmap.RDONLY
	if write {
		prot = mmap.RDWR
	}
	m, err := mmap.MapRegion(f, size, prot, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("shm: mmap %s: %w", f.Name(), err)
	}
	return m, nil
}

// Flock takes the host's exclusive lock. Inspect holds a shared lock for a
// few microseconds to see whether a host is attached, so a short retry
// keeps a host starting at that moment from failing.
func Flock(f *os.File) error {
	var err error
	for try := 0; try < 5; try++ {
		if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("shm: Flock %s: %w", f.Name(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%w: %s", layout.ErrLocked, f.Name())
}

// ProbeLock reports whether a host holds the file's lock.
func ProbeLock(f *os.File) bool {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// ProcStart returns the start time of process pid in clock ticks since boot
// (field 22 of /proc/<pid>/stat) and whether the process is alive. A zombie
// counts as dead: it will never record again, and its parent may take
// arbitrarily long to reap it.
func ProcStart(pid int) (start uint64, alive bool, err error) {
	if pid <= 0 || pid > PidLimit {
		return 0, false, nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return 0, false, nil
		}
		return 0, false, err
	}
	return ParseStat(b)
}

// PidLimit is Linux's PID_MAX_LIMIT: no pid is above it. A pid read from
// the file beyond it (a scribble) must never reach kill(2), where a value
// that wraps negative would name a process group.
const PidLimit = 1 << 22

// PidGone reports whether no process has this pid. It needs no file
// descriptor, so it still answers when /proc cannot be read (the host out
// of descriptors); a zombie or a reused pid still counts as present.
func PidGone(pid uint32) bool {
	if pid == 0 || pid > PidLimit {
		return true
	}
	return errors.Is(syscall.Kill(int(pid), 0), syscall.ESRCH)
}

// ParseStat reads the state (field 3) and start time (field 22) of a
// /proc/<pid>/stat line. The command (field 2) may contain spaces and
// parentheses, so fields are counted from the last ')'.
func ParseStat(b []byte) (start uint64, alive bool, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false, errors.New("shm: unparsable /proc stat")
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, false, errors.New("shm: short /proc stat")
	}
	start, err = strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("shm: /proc stat start time: %w", err)
	}
	st := fields[0]
	alive = !(len(st) == 1 && (st[0] == 'Z' || st[0] == 'X' || st[0] == 'x'))
	return start, alive, nil
}

// SelfStart is this process's start time, read once.
func SelfStart() (uint64, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, fmt.Errorf("shm: reading /proc/self/stat (Linux is required): %w", err)
	}
	s, _, err := ParseStat(b)
	return s, err
}

// PathZ is path with the NUL byte QuietStat wants, made once.
func PathZ(path string) []byte { return append([]byte(path), 0) }
