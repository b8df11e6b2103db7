package sys

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestQuietStat: the raw stat calls answer as syscall's do: lstat does
// not follow a symlink (checkFile's "a symlink in its place is a
// replacement"), stat does (a /proc/PID/fd path), a missing path is
// ENOENT, and a path without its NUL is refused rather than read past.
func TestQuietStat(t *testing.T) {
	dir := t.TempDir()
	file, link := filepath.Join(dir, "f"), filepath.Join(dir, "l")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	var want, got syscall.Stat_t
	if err := syscall.Stat(file, &want); err != nil {
		t.Fatal(err)
	}
	if err := QuietStat(PathZ(link), false, &got); err != nil || got.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Fatalf("lstat of a symlink: mode %o, err %v", got.Mode, err)
	}
	if err := QuietStat(PathZ(link), true, &got); err != nil || got.Ino != want.Ino || got.Dev != want.Dev {
		t.Fatalf("stat through a symlink: inode %d, want %d (err %v)", got.Ino, want.Ino, err)
	}
	if err := QuietStat(PathZ(filepath.Join(dir, "gone")), false, &got); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("missing path: %v, want ENOENT", err)
	}
	if err := QuietStat([]byte(file), false, &got); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("path without NUL: %v, want EINVAL", err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := QuietFstat(int(f.Fd()), &got); err != nil || got.Ino != want.Ino || got.Size != 1 {
		t.Fatalf("fstat: inode %d size %d, want %d 1 (err %v)", got.Ino, got.Size, want.Ino, err)
	}
}

// TestQuietPoll: the raw ppoll answers as poll(2) with a zero timeout: a
// pipe with nothing to read is not ready, one with a byte is (POLLIN), one
// whose writer closed reports POLLHUP, and a closed descriptor POLLNVAL.
func TestQuietPoll(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fds := []unix.PollFd{{Fd: int32(r.Fd()), Events: unix.POLLIN}}
	if n, err := QuietPoll(fds); n != 0 || err != nil || fds[0].Revents != 0 {
		t.Fatalf("empty pipe: n %d revents %#x err %v, want nothing ready", n, fds[0].Revents, err)
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if n, err := QuietPoll(fds); n != 1 || err != nil || fds[0].Revents != unix.POLLIN {
		t.Fatalf("pipe with a byte: n %d revents %#x err %v, want POLLIN", n, fds[0].Revents, err)
	}
	w.Close()
	fds[0].Revents = 0
	if n, err := QuietPoll(fds); n != 1 || err != nil || fds[0].Revents&unix.POLLHUP == 0 {
		t.Fatalf("writer closed: n %d revents %#x err %v, want POLLHUP", n, fds[0].Revents, err)
	}
	fds = append(fds, unix.PollFd{Fd: 1 << 20, Events: unix.POLLIN})
	if n, err := QuietPoll(fds); n != 2 || err != nil || fds[1].Revents != unix.POLLNVAL {
		t.Fatalf("no such descriptor: n %d revents %#x err %v, want POLLNVAL", n, fds[1].Revents, err)
	}
	if n, err := QuietPoll(nil); n != 0 || err != nil {
		t.Fatalf("no descriptors: n %d err %v", n, err)
	}
}
