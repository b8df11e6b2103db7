// The file under attack: the SIGBUS guard around every read of the
// mapping, and the checks that stop the host when the file is damaged,
// shortened, removed or replaced.

package host

import (
	"bytes"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"syscall"

	"github.com/tapes-go/tapes/shm/internal/sys"
)

// ErrDamaged matches every *DamageError.
var ErrDamaged = errors.New("shm: file damaged")

// DamageError says that the file under the host was truncated, shrunk and
// regrown, removed or replaced. The host cannot trust what it maps any more
// (workers may be recording into pages that are gone, or into another
// file), so Drain stops with it and every later Drain or DrainOnce returns
// it: the process should exit and be restarted, and the next Create
// replaces a damaged file at the path. errors.Is matches ErrDamaged and Err.
type DamageError struct {
	Path   string
	Err    error // ErrTruncated (truncated, shrunk, zeroed) or ErrReplaced (removed or replaced)
	Detail string
}

func (e *DamageError) Error() string        { return "shm: " + e.Path + " damaged: " + e.Detail }
func (e *DamageError) Unwrap() error        { return e.Err }
func (e *DamageError) Is(target error) bool { return target == ErrDamaged }

// damaged records the first damage found; later calls keep reporting it.
func (h *Host) damaged(err error) error {
	var d *DamageError
	if !errors.As(err, &d) {
		return err // not damage (an internal error): nothing to remember
	}
	if h.damage == nil {
		h.damage = d
		if h.self.damaged != nil {
			h.self.damaged.Inc()
		}
	}
	return h.damage
}

// checkFile compares the file with what the host mapped: size, inode under
// the path, the canary at its end (zeroed by any shrinking, even one that
// was grown back), permissions and the header's first line. Damage is an
// error; a permission or a header line someone changed is repaired,
// counted (<prefix>.repaired) and logged. It costs two stat calls and two
// loads, once per liveness interval.
func (h *Host) checkFile() error {
	var st, ps syscall.Stat_t
	// Quiet calls: this runs every second in an idle host (see sys.QuietFstat).
	if err := sys.QuietFstat(h.fd, &st); err != nil {
		return &DamageError{Path: h.path, Err: ErrReplaced, Detail: fmt.Sprintf("fstat of the mapped file failed: %v", err)}
	}
	if st.Size < int64(h.g.FileSize) {
		return &DamageError{Path: h.path, Err: ErrTruncated, Detail: fmt.Sprintf("truncated to %d bytes; the host mapped %d", st.Size, h.g.FileSize)}
	}
	// A symlink put in the path's place is a replacement; /proc/PID/fd/N
	// (a memfd) is one to follow.
	err := sys.QuietStat(h.pathZ, isFDPath(h.path), &ps)
	switch {
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR):
		return &DamageError{Path: h.path, Err: ErrReplaced, Detail: "removed from its path: new workers cannot find it"}
	case err != nil:
		return &DamageError{Path: h.path, Err: ErrReplaced, Detail: fmt.Sprintf("its path cannot be checked: %v", err)}
	case uint64(ps.Dev) != h.info.Dev || ps.Ino != h.info.Ino:
		return &DamageError{Path: h.path, Err: ErrReplaced, Detail: fmt.Sprintf("replaced: the path names another file (inode %d, the host maps inode %d), which nothing would drain", ps.Ino, h.info.Ino)}
	}
	if perm := st.Mode & 0o7777; perm&0o077 != 0 {
		h.repairPerm(perm)
	}
	var dmg error
	err = h.protect(func() {
		if atomic.LoadUint64(u64(h.m, h.g.TrailerOff()+trailerCanary)) != h.canary {
			dmg = &DamageError{Path: h.path, Err: ErrTruncated, Detail: "shrunk and grown back (or its last bytes overwritten): the canary the host wrote at its end is gone, and so is whatever was past the cut"}
			return
		}
		if !bytes.Equal(h.m[:hdrWait], h.hdr[:hdrWait]) || atomic.LoadUint32(u32(h.m, hdrWaitZero)) != 0 {
			copy(h.m[:hdrWait], h.hdr[:hdrWait])
			atomic.StoreUint32(u32(h.m, hdrWaitZero), 0)
			h.log.Warn("shm: the file's header was overwritten; the host restored it", "path", h.path)
			h.repaired++
		}
	})
	if err != nil {
		return err
	}
	if h.repaired > 0 && h.self.repaired != nil {
		h.self.repaired.Add(int64(h.repaired))
		h.repaired = 0
	}
	return dmg
}

// protect runs f with faults on the mapping turned into a recovered panic:
// the file can be truncated by anyone who can write it, and touching a page
// past its new end raises SIGBUS. A fault is a *DamageError.
func (h *Host) protect(f func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			if fe, ok := p.(interface{ Addr() uintptr }); ok {
				err = &DamageError{Path: h.path, Err: ErrTruncated, Detail: fmt.Sprintf("truncated under the host (fault at %#x)", fe.Addr())}
				return
			}
			err = fmt.Errorf("shm: internal error draining %s: %v\n%s", h.path, p, debug.Stack())
		}
	}()
	f()
	return nil
}
