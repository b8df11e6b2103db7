// Where the file is: the environment variable workers read and the
// default path, in a directory private to the user.

package shm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
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

// errOpenPerm is a worker's refusal of a file that other users may read or
// write: they could forge its metrics or truncate it under every worker.
func errOpenPerm(path string, perm uint32) error {
	return fmt.Errorf("%w: %s has mode %#o, want 0600 (a host repairs the mode when it attaches; or chmod 600 it)", ErrBadPerm, path, perm)
}
