package shm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	mmap "github.com/edsrzf/mmap-go"
)

// EnvVar names the environment variable OpenEnv reads the file path from.
const EnvVar = "TAPES_SHM"

// DefaultPath returns the default file: $XDG_RUNTIME_DIR/tapes/metrics.shm
// when XDG_RUNTIME_DIR is set, else /dev/shm/tapes-<uid>/metrics.shm. The
// directory is created with mode 0700 if missing, and refused if it is a
// symlink, is owned by another user or is accessible to others.
func DefaultPath() (string, error) {
	var dir string
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
		dir = filepath.Join(x, "tapes")
	} else {
		dir = fmt.Sprintf("/dev/shm/tapes-%d", os.Getuid())
	}
	if err := ensurePrivateDir(dir); err != nil {
		return "", err
	}
	return filepath.Join(dir, "metrics.shm"), nil
}

func ensurePrivateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("shm: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("shm: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("shm: %s is not a directory (symlinks are refused)", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%w: %s belongs to uid %d", ErrNotOwner, dir, st.Uid)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %v, want 0700", ErrBadPerm, dir, fi.Mode().Perm())
	}
	return nil
}

// openFile opens an existing file without following a symlink and checks
// that it is a regular file owned by the caller. It returns its size and
// permission bits. A path naming an inherited descriptor (/proc/self/fd/N,
// /proc/<pid>/fd/N, /dev/fd/N: how a sealed memfd reaches workers) is a
// kernel link to a file already open in some process, so it is followed.
func openFile(path string, flag int) (*os.File, fileInfo, error) {
	nofollow := syscall.O_NOFOLLOW
	if isFDPath(path) {
		nofollow = 0
	}
	f, err := os.OpenFile(path, flag|nofollow|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fileInfo{}, fmt.Errorf("shm: %s is a symlink; refused: %w", path, err)
		}
		if errors.Is(err, syscall.EISDIR) {
			return nil, fileInfo{}, fmt.Errorf("%w: %s is a directory", ErrNotRegular, path)
		}
		return nil, fileInfo{}, fmt.Errorf("shm: %w", err)
	}
	fi, err := checkFile(f)
	if err != nil {
		f.Close()
		return nil, fileInfo{}, err
	}
	return f, fi, nil
}

// fdPathRE matches the paths of open descriptors that the kernel resolves
// itself.
var fdPathRE = regexp.MustCompile(`^(/proc/(self|[0-9]+)/fd|/dev/fd)/[0-9]+$`)

func isFDPath(p string) bool { return fdPathRE.MatchString(p) }

// fileInfo is what the opener of a file checks and the host later compares.
type fileInfo struct {
	size     int64
	perm     uint32 // permission bits
	dev, ino uint64
}

func statInfo(st *syscall.Stat_t) fileInfo {
	return fileInfo{size: st.Size, perm: st.Mode & 0o7777, dev: uint64(st.Dev), ino: st.Ino}
}

func checkFile(f *os.File) (fileInfo, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return fileInfo{}, fmt.Errorf("shm: fstat %s: %w", f.Name(), err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fileInfo{}, fmt.Errorf("%w: %s", ErrNotRegular, f.Name())
	}
	if int(st.Uid) != os.Getuid() {
		return fileInfo{}, fmt.Errorf("%w: %s belongs to uid %d", ErrNotOwner, f.Name(), st.Uid)
	}
	return statInfo(&st), nil
}

// errOpenPerm is a worker's refusal of a file that other users may read or
// write: they could forge its metrics or truncate it under every worker.
func errOpenPerm(path string, perm uint32) error {
	return fmt.Errorf("%w: %s has mode %#o, want 0600 (a host repairs the mode when it attaches; or chmod 600 it)", ErrBadPerm, path, perm)
}

func mapFile(f *os.File, size int, write bool) (mmap.MMap, error) {
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

// flock takes the host's exclusive lock. Inspect holds a shared lock for a
// few microseconds to see whether a host is attached, so a short retry
// keeps a host starting at that moment from failing.
func flock(f *os.File) error {
	var err error
	for try := 0; try < 5; try++ {
		if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("shm: flock %s: %w", f.Name(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%w: %s", ErrLocked, f.Name())
}

// probeLock reports whether a host holds the file's lock.
func probeLock(f *os.File) bool {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// procStart returns the start time of process pid in clock ticks since boot
// (field 22 of /proc/<pid>/stat) and whether the process is alive. A zombie
// counts as dead: it will never record again, and its parent may take
// arbitrarily long to reap it.
func procStart(pid int) (start uint64, alive bool, err error) {
	if pid <= 0 || pid > pidLimit {
		return 0, false, nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return 0, false, nil
		}
		return 0, false, err
	}
	return parseStat(b)
}

// pidLimit is Linux's PID_MAX_LIMIT: no pid is above it. A pid read from
// the file beyond it (a scribble) must never reach kill(2), where a value
// that wraps negative would name a process group.
const pidLimit = 1 << 22

// pidGone reports whether no process has this pid. It needs no file
// descriptor, so it still answers when /proc cannot be read (the host out
// of descriptors); a zombie or a reused pid still counts as present.
func pidGone(pid uint32) bool {
	if pid == 0 || pid > pidLimit {
		return true
	}
	return errors.Is(syscall.Kill(int(pid), 0), syscall.ESRCH)
}

// parseStat reads the state (field 3) and start time (field 22) of a
// /proc/<pid>/stat line. The command (field 2) may contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (start uint64, alive bool, err error) {
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

// selfStart is this process's start time, read once.
func selfStart() (uint64, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, fmt.Errorf("shm: reading /proc/self/stat (Linux is required): %w", err)
	}
	s, _, err := parseStat(b)
	return s, err
}
