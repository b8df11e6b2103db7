package sys

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
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
