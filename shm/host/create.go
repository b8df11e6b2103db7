// Creating and attaching the shm file: the flock, the geometry checks, a
// new file built under a temporary name, the memfd form.

package host

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tapes-go/tapes/shm/internal/sys"

	"golang.org/x/sys/unix"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/internal/layout"
	"github.com/tapes-go/tapes/wire"
)

// Create creates the shm file at path (shm.DefaultPath if path is empty)
// with mode 0600, or attaches to the existing one after validating it, and
// takes the file's flock; it fails with ErrLocked while another host holds
// it. A new file appears under its name only once its header is complete
// (it is built under a temporary name and linked into place).
func Create(path string, cfg Config) (*Host, error) {
	cfg, g, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if path == "" {
		p, err := shm.DefaultPath()
		if err != nil {
			return nil, err
		}
		path = p
	}
	for attempt := 0; ; attempt++ {
		f, fi, err := openFile(path, os.O_RDWR)
		if errors.Is(err, os.ErrNotExist) && attempt < 3 {
			// Another host may create it first (the link fails): then
			// this one attaches to theirs.
			if _, err := create(path, g, false); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		h, err := attach(path, f, fi, cfg)
		var dmg *damagedAtStart
		if errors.As(err, &dmg) && attempt < 3 {
			// attach holds the flock on the damaged file, so no other host
			// drains it: replace it with a new file.
			if _, rerr := create(path, g, true); rerr != nil {
				f.Close()
				return nil, fmt.Errorf("%w; replacing it failed: %s", dmg.err, strings.TrimPrefix(rerr.Error(), "shm: "))
			}
			f.Close()
			cfg.logger().Warn("shm: replaced a damaged file with a new one; records left in it are lost", "path", path, "damage", dmg.err.Error())
			continue
		}
		return h, err
	}
}

func (c Config) check() (Config, geometry, error) {
	c = c.withDefaults()
	if err := wire.ValidateName(c.Prefix); err != nil {
		return c, geometry{}, fmt.Errorf("shm: Config.Prefix: %w", err)
	}
	if c.CoalesceWindow < MinCoalesceWindow || c.CoalesceWindow > MaxCoalesceWindow {
		return c, geometry{}, fmt.Errorf("shm: Config.CoalesceWindow %v: must be from %v to %v", c.CoalesceWindow, MinCoalesceWindow, MaxCoalesceWindow)
	}
	g, err := layout.NewGeometry(c.Slots, c.RingRecords, c.MaxMetrics)
	if err != nil {
		return c, geometry{}, fmt.Errorf("shm: %w", err)
	}
	return c, g, nil
}

func (c Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// CreateMemfd creates the file as an anonymous memfd sealed against
// shrinking and growing (F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL), so that
// nobody, whatever their permissions, can truncate it under the workers:
// a path-based file can be truncated by any process of its owner, and a
// worker touching a page past the new end dies of SIGBUS. It has no name in
// any directory: hand File() to the workers (os/exec's ExtraFiles) with
// TAPES_SHM=/proc/self/fd/N, where N is its descriptor in the worker, or
// give other processes of the same user Path(), /proc/<host pid>/fd/<fd>.
// The file lives as long as some process holds it open or mapped, so a
// host restart does not find the old one: use it where the host and the
// workers restart together (tapes-host run).
func CreateMemfd(cfg Config) (*Host, error) {
	cfg, g, err := cfg.check()
	if err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate("tapes-shm", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("shm: memfd_create: %w", err)
	}
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd)
	f := os.NewFile(uintptr(fd), path)
	fail := func(err error) (*Host, error) {
		f.Close()
		return nil, err
	}
	if err := initFile(f, g); err != nil {
		return fail(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fail(fmt.Errorf("shm: sealing the memfd: %w", err))
	}
	fi, err := checkFile(f)
	if err != nil {
		return fail(err)
	}
	return attach(path, f, fi, cfg)
}

// File returns the open file the host maps, for handing to workers by
// descriptor inheritance (see CreateMemfd). It stays owned by the host.
func (h *Host) File() *os.File { return h.f }

// create builds a complete file under a temporary name and links it to
// path, so that no worker or host ever sees a half-written header.
// With replace it renames the new file over path instead (the caller holds
// the flock of the damaged file there).
func create(path string, g geometry, replace bool) (bool, error) {
	tmp := fmt.Sprintf("%s.tmp-%d-%d", path, os.Getpid(), time.Now().UnixNano())
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return false, fmt.Errorf("shm: %w", err)
	}
	defer os.Remove(tmp)
	defer f.Close()
	if err := initFile(f, g); err != nil {
		return false, err
	}
	if replace {
		if err := os.Rename(tmp, path); err != nil {
			return false, fmt.Errorf("shm: %w", err)
		}
		return true, nil
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("shm: %w", err)
	}
	return true, nil
}

// initFile sizes a new, empty file (so the whole mapping is backed and
// every byte is zero) and writes its header.
func initFile(f *os.File, g geometry) error {
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("shm: %w", err)
	}
	if err := f.Truncate(int64(g.FileSize)); err != nil {
		return fmt.Errorf("shm: sizing %s: %w", f.Name(), err)
	}
	hdr := make([]byte, layout.HeaderSize)
	g.PutHeader(hdr)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("shm: writing header: %w", err)
	}
	return nil
}

// damagedAtStart is attach's verdict on a file that is recognisably a
// damaged tapes file (or empty, or zeroed), which Create replaces; a
// file that may be someone else's is refused instead.
type damagedAtStart struct{ err error }

func (d *damagedAtStart) Error() string { return d.err.Error() }

func attach(path string, f *os.File, fi fileInfo, cfg Config) (*Host, error) {
	fail := func(err error) (*Host, error) {
		f.Close()
		return nil, err
	}
	if err := flock(f); err != nil {
		return fail(err)
	}
	hdr := make([]byte, layout.HeaderSize)
	n, rerr := f.ReadAt(hdr, 0)
	g, err := layout.ValidateHeader(hdr[:n], fi.Size)
	if err != nil {
		err = fmt.Errorf("%w (%s)", err, path)
		zero := !slices.ContainsFunc(hdr[:n], func(b byte) bool { return b != 0 })
		ours := n >= len(layout.Magic) && string(hdr[:len(layout.Magic)]) == layout.Magic
		if zero || ours && (errors.Is(err, ErrTruncated) || errors.Is(err, ErrCorrupt)) {
			return nil, &damagedAtStart{err} // f stays open and locked until the caller replaced the file
		}
		return fail(err)
	}
	if rerr != nil {
		return fail(fmt.Errorf("%w: %s: reading header: %v", ErrTruncated, path, rerr))
	}
	m, err := mapFile(f, g.FileSize, true)
	if err != nil {
		return fail(err)
	}
	h := &Host{
		path: path, pathZ: sys.PathZ(path), fd: int(f.Fd()), f: f, m: m, g: g, prefix: cfg.Prefix, log: cfg.logger(),
		info:      fi,
		canary:    rand.Uint64() | 1<<63, // the file's last byte is never 0 (see trailerCanary)
		liveEvery: cfg.LivenessInterval,
		maxIdle:   cfg.MaxIdleSleep,
		coalesce:  cfg.CoalesceWindow,
		slots:     make([]hslot, g.Slots),
		bells:     (g.Slots + 63) / 64,
		tracked:   make([]uint64, (g.Slots+63)/64),
		rung:      make([]uint64, (g.Slots+63)/64),
		suspect:   make([]uint64, (g.Slots+63)/64),
		shown:     -1,
		pidfdCap:  pidfdCap(),
	}
	copy(h.hdr[:], hdr)
	if fi.Perm&0o077 != 0 {
		h.repairPerm(fi.Perm)
	}
	if err := h.protect(func() { atomic.StoreUint64(u64(m, g.TrailerOff()+trailerCanary), h.canary) }); err != nil {
		m.Unmap()
		return fail(err)
	}
	r := cfg.Registry
	if r == nil {
		r = registry.New()
	}
	if err := h.bind(r); err != nil {
		m.Unmap()
		return fail(err)
	}
	return h, nil
}

// repairPerm takes back a permission that let other users read or write
// the file (they could forge metrics or truncate it under every worker).
func (h *Host) repairPerm(perm uint32) {
	if err := h.f.Chmod(0o600); err != nil {
		h.log.Warn("shm: the file is accessible to other users and could not be repaired", "path", h.path, "mode", fmt.Sprintf("%#o", perm), "err", err)
		return
	}
	h.log.Warn("shm: the file was accessible to other users; its mode is 0600 again", "path", h.path, "mode", fmt.Sprintf("%#o", perm))
	h.repaired++
}
