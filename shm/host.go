package shm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mathbits "math/bits"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mmap "github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"

	"github.com/tapes-go/tapes/internal/apply"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm/internal/relayhook"
	"github.com/tapes-go/tapes/wire"
)

// Config is the geometry of a new file and the host's settings. Zero fields
// take the defaults. When CreateHost attaches to an existing file, the
// file's geometry wins over Slots, RingRecords and MaxMetrics.
//
// With the defaults a file is 64 slots of 528 KiB (33 MiB in all), sparse
// on tmpfs: a slot's pages are allocated only as its worker touches them,
// so an idle worker costs its control lines and definitions, and a busy one
// its 256 KiB ring plus 272 bytes per metric it defines.
type Config struct {
	// Slots is the number of worker processes that can be attached at once
	// (default 64, at most 4096).
	Slots int
	// RingRecords is the number of 16-byte records in each worker's ring, a
	// power of two (default 16384: 256 KiB, about 100 µs of a worker
	// recording flat out, or 16 s at 1000 events/s with no host).
	RingRecords int
	// MaxMetrics is how many distinct names one worker may define (default
	// 1024).
	MaxMetrics int
	// Prefix is where the host's own metrics go (default "tapes.shm").
	Prefix string
	// Logger receives the host's warnings about repairs it made to the
	// file (a permission that let other users in, a scribbled header, a
	// damaged file replaced at start). Nil means slog.Default().
	Logger *slog.Logger
}

// Default configuration values.
const (
	DefaultSlots       = 64
	DefaultRingRecords = 16384
	DefaultMaxMetrics  = 1024
	DefaultPrefix      = "tapes.shm"
)

func (c Config) withDefaults() Config {
	if c.Slots == 0 {
		c.Slots = DefaultSlots
	}
	if c.RingRecords == 0 {
		c.RingRecords = DefaultRingRecords
	}
	if c.MaxMetrics == 0 {
		c.MaxMetrics = DefaultMaxMetrics
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	return c
}

// Host owns a shm file: it drains the workers' rings into a registry,
// reclaims the slots of workers that exited, and holds an exclusive flock on
// the file so that two hosts never drain it at once.
//
// Nothing a worker writes can make the host panic: every offset it uses
// comes from the geometry validated at attach and kept in Go memory,
// a record is applied only if its first word matches its definition's or
// wire.DecodeWords and the definition table accept it, and reads of the
// mapping run with debug.SetPanicOnFault so that a file truncated under
// the host (SIGBUS) becomes an ErrTruncated error.
type Host struct {
	mu     sync.Mutex
	path   string
	f      *os.File
	m      mmap.MMap
	g      geometry
	prefix string
	closed bool
	log    *slog.Logger

	// What the file must keep looking like (checkFile): the inode the
	// host mapped, the canary it wrote into the trailer, the header's
	// first line.
	info     fileInfo
	canary   uint64
	hdr      [hdrWait]byte
	damage   *DamageError // set once the file is found damaged: Drain and DrainOnce return it
	repaired int          // repairs made before the host's metrics were bound

	seenWaits   uint64 // header claimWaits at the last liveness check
	seenRefused uint64 // header refused counted so far

	liveEvery time.Duration
	maxIdle   time.Duration
	lastLive  time.Time
	lastFull  time.Time // the last pass that read every slot's state

	passes    atomic.Uint64 // completed drain passes (Passes)
	fullScans atomic.Uint64 // passes that read every slot's state

	reg   *registry.Registry
	self  selfMetrics
	slots []hslot
	todo  []slotWork // a pass's slots, kept to spare the allocation
	visit []int      // the slots a pass looks at (doorbell and pending), likewise kept
	// pend is the slots the last pass left with work the doorbell will not
	// announce again: a record claimed but not yet committed (the worker
	// rang before committing), or a closed slot waiting for one. The next
	// pass visits them, and the host does not sleep in the futex while
	// there are any.
	pend []int
	more bool // the last pass stopped in a slot at its budget (one ring's worth)
	// busiest is the most records the last pass drained from one slot:
	// a worker writing that fast may fill its ring during a nap.
	busiest int
	bells   int // doorbell words that cover the file's slots

	coalesce time.Duration // how long back-to-back wake-ups wait for each other (see Drain)
	// relay waits on hostWait for the host outside the Go scheduler (see
	// package shm/relay); nil before the first sleep, when the program
	// does not link shm/relay (or was built without cgo), or when it
	// could not start (noRelay is then set, and tests set it to take the
	// plain futex path).
	relay    relayhook.Relay
	noRelay  bool
	ticking  bool          // the relay answers every coalescing window (see window)
	active   int           // bound slots in state ACTIVE at their last visit: the workers gauge
	shown    int           // the workers gauge's value, -1 before the first pass
	pidfds   int           // open pidfds (hslot.pidfd)
	pidfdCap int           // at most this many, to leave the process descriptors
	polls    []unix.PollFd // liveness check's pidfds, kept to spare the allocation

	// aggMu guards aggs: slots drained concurrently (drainSlots) may bind
	// gauge definitions at the same time.
	aggMu sync.Mutex
	aggs  map[string]*gaugeAgg
}

type selfMetrics struct {
	events, malformed, rejected, discarded, aborted, reclaimed, dropped *registry.Counter
	refused, unknown, repaired, damaged                                 *registry.Counter
	workers, lag                                                        *registry.Gauge
}

// hslot is what the host knows about one slot's current occupant.
type hslot struct {
	bound    bool
	pid      uint32
	gen      uint32
	consumer uint64
	dropped  uint64
	droppedC *registry.Counter
	defs     []hdef      // what the host bound each definition to, by id
	tab      apply.Table // the same ids as the applier's table
	gaugeBad int         // NaN or ±Inf gauge values the applier was given (see slotGauge)
	badDefs  uint64      // last out-of-range definition count reported
	holeAt   time.Time
	active   bool // state ACTIVE at the last visit (counted in Host.active)
	marked   bool // in the visit list of the pass under way
	claiming bool // CLAIMING at the last visit
	// pidfd is a descriptor of the worker's process plus one (0: none,
	// and liveness reads /proc at every check): it becomes readable when
	// the process exits, so a check of all workers is one poll(2).
	pidfd  int
	exited bool // its pidfd was readable at the last liveness check
}

// boundTo reports whether the host has bound this slot to the worker the
// state word names (pid and generation): otherwise the next pass binds it.
func (hs *hslot) boundTo(pid, gen uint32) bool { return hs.bound && hs.pid == pid && hs.gen == gen }

// hdef is what the host bound one of a worker's definitions to, beyond
// the applier's entry: what unbinding the worker must undo.
type hdef struct {
	kind     wire.Kind
	rejected bool
	name     string
	g        *gaugeAgg // a gauge's cross-process aggregate
}

var batchPool = sync.Pool{New: func() any { return new(apply.Batch) }}

// slotGauge is the applier's gauge for one slot's definition: values go
// to the cross-process aggregate under the slot's number; NaN and ±Inf,
// which would poison a combined value, are counted instead.
type slotGauge struct {
	a    *gaugeAgg
	slot int
	bad  *int
}

func (g slotGauge) Set(f float64) {
	if f-f != 0 {
		*g.bad++
		return
	}
	g.a.set(g.slot, f)
}

// CreateHost creates the shm file at path (DefaultPath if path is empty)
// with mode 0600, or attaches to the existing one after validating it, and
// takes the file's flock; it fails with ErrLocked while another host holds
// it. A new file appears under its name only once its header is complete
// (it is built under a temporary name and linked into place).
func CreateHost(path string, cfg Config) (*Host, error) {
	cfg, g, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if path == "" {
		p, err := DefaultPath()
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
	g, err := newGeometry(c.Slots, c.RingRecords, c.MaxMetrics)
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
	if err := f.Truncate(int64(g.fileSize)); err != nil {
		return fmt.Errorf("shm: sizing %s: %w", f.Name(), err)
	}
	hdr := make([]byte, HeaderSize)
	g.putHeader(hdr)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("shm: writing header: %w", err)
	}
	return nil
}

// damagedAtStart is attach's verdict on a file that is recognisably a
// damaged tapes file (or empty, or zeroed), which CreateHost replaces; a
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
	hdr := make([]byte, HeaderSize)
	n, rerr := f.ReadAt(hdr, 0)
	g, err := validateHeader(hdr[:n], fi.size)
	if err != nil {
		err = fmt.Errorf("%w (%s)", err, path)
		zero := !slices.ContainsFunc(hdr[:n], func(b byte) bool { return b != 0 })
		ours := n >= len(Magic) && string(hdr[:len(Magic)]) == Magic
		if zero || ours && (errors.Is(err, ErrTruncated) || errors.Is(err, ErrCorrupt)) {
			return nil, &damagedAtStart{err} // f stays open and locked until the caller replaced the file
		}
		return fail(err)
	}
	if rerr != nil {
		return fail(fmt.Errorf("%w: %s: reading header: %v", ErrTruncated, path, rerr))
	}
	m, err := mapFile(f, g.fileSize, true)
	if err != nil {
		return fail(err)
	}
	h := &Host{
		path: path, f: f, m: m, g: g, prefix: cfg.Prefix, log: cfg.logger(),
		info:      fi,
		canary:    rand.Uint64() | 1<<63, // the file's last byte is never 0 (see trailerCanary)
		liveEvery: 250 * time.Millisecond,
		maxIdle:   250 * time.Millisecond,
		coalesce:  defaultCoalesce,
		slots:     make([]hslot, g.slots),
		bells:     (g.slots + 63) / 64,
		shown:     -1,
		pidfdCap:  pidfdCap(),
	}
	copy(h.hdr[:], hdr)
	if fi.perm&0o077 != 0 {
		h.repairPerm(fi.perm)
	}
	if err := h.protect(func() { atomic.StoreUint64(u64(m, g.trailerOff()+trailerCanary), h.canary) }); err != nil {
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

// Path returns the file's path, for passing to workers (see EnvVar).
func (h *Host) Path() string { return h.path }

// Slots returns the number of worker slots in the file.
func (h *Host) Slots() int { return h.g.slots }

// RingRecords returns the number of records in each worker's ring.
func (h *Host) RingRecords() int { return h.g.ringRecs }

// Close unmaps the file and releases its flock. Events still in the rings
// stay there for the next host. A Drain running in another goroutine
// returns ErrClosed.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	for i := range h.slots {
		h.unwatch(&h.slots[i])
	}
	// A Drain asleep returns ErrClosed now, not at its timeout.
	h.wakeLocked()
	h.stopRelay()
	err := h.m.Unmap()
	if cerr := h.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// DrainOption tunes Drain.
type DrainOption func(*Host)

// WithMaxIdleSleep sets the longest sleep between passes when no events
// arrive (default 250ms). Workers wake a sleeping host through a futex, so
// this bounds only how long a missed wake-up could delay an event (on
// systems without futexes it is capped at 1ms per sleep).
func WithMaxIdleSleep(d time.Duration) DrainOption {
	return func(h *Host) {
		if d > 0 {
			h.maxIdle = d
		}
	}
}

// WithLivenessInterval sets how often the host checks that the workers of
// active slots are alive and refreshes dropped counts and lag (default 250ms).
func WithLivenessInterval(d time.Duration) DrainOption {
	return func(h *Host) {
		if d > 0 {
			h.liveEvery = d
		}
	}
}

// Drain applies the workers' events to r until ctx ends, then drains what
// is committed once more and returns nil. A pass visits only the slots
// whose doorbell rang (docs/shm-layout.md, "The doorbell"), so its cost
// follows the events, not the number of slots. While a pass finds a ring
// with a backlog, the next follows at once; when events trickle in, the
// host sleeps in a futex wait that the next worker to record wakes (Linux),
// drains at once when woken after a quiet period, and when wake-ups come
// back to back it lets the events of a coalescing window (1 ms) gather,
// with the wake flag down so that workers make no system calls, before its
// next pass, until a window finds none. In a program that imports package
// shm/relay built with cgo (tapes-host), the host makes these waits in a
// thread of its own, which the Go runtime's scheduler does not see: a
// goroutine blocked in futex(2) costs the process several runtime wake-ups
// per event. Liveness checks, slot reclaim and the file's damage checks
// run on their own cadence (WithLivenessInterval); a sleep never outlasts
// WithMaxIdleSleep. See docs/RATIONALE.md, "Polling without burning a
// core". It returns an error only if the file becomes unusable (a
// *DamageError when it is truncated, shrunk, removed or replaced under the
// host: see checkFile) or r refuses the host's own metrics.
func (h *Host) Drain(ctx context.Context, r *registry.Registry, opts ...DrainOption) error {
	h.mu.Lock()
	for _, o := range opts {
		o(h)
	}
	h.mu.Unlock()
	// Cancellation must not wait for the futex timeout.
	stop := context.AfterFunc(ctx, func() {
		h.mu.Lock()
		if !h.closed {
			h.wakeLocked()
		}
		h.mu.Unlock()
	})
	defer stop()
	// The relay's thread lives while Drain runs (Close stops it too).
	defer func() {
		h.mu.Lock()
		if !h.closed {
			h.wakeLocked()
			h.stopRelay()
		}
		h.mu.Unlock()
	}()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	nap := func(d time.Duration) {
		t.Reset(d)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	coalescing := false
	lastPass := time.Now()
	var lastBig time.Time // the last pass that found a backlog
	pendNap := time.Duration(0)
	var spinTill time.Time
	for {
		if ctx.Err() != nil {
			_, err := h.drain(r, true)
			return err
		}
		n, err := h.drain(r, false)
		if err != nil {
			return err
		}
		h.mu.Lock()
		more, pending, busiest := h.more, len(h.pend) > 0, h.busiest
		h.mu.Unlock()
		now := time.Now()
		since := now.Sub(lastPass)
		lastPass = now
		if n > 0 {
			// Progress: a slot still pending is a worker writing, not one
			// stuck between claim and commit. (Keeping the naps of an
			// earlier stall let a worker writing flat out fill its ring:
			// BenchmarkTransportE2E/shm-default-ring lost 84% against 76%.)
			pendNap, spinTill = 0, time.Time{}
		}
		if n >= 256 || more {
			lastBig = now
			continue // a backlog: drain back to back, as fast as the workers write
		}
		if now.Sub(lastBig) < hotFor {
			// Just out of a backlog: workers writing flat out that were
			// off the CPU for this pass fill a ring within a nap (with
			// 1 ms naps, BenchmarkTransportE2E/shm-default-ring lost 88%
			// of its events against 76%). Keep passing.
			runtime.Gosched()
			continue
		}
		// A worker whose rate since the last pass would fill a quarter of
		// its ring during a nap is starting a burst: no nap (a 1 ms nap
		// against a worker writing flat out dropped events).
		if busiest > 0 && time.Duration(busiest)*burstHorizon > since*time.Duration(h.g.ringRecs/4) {
			continue
		}
		if pending {
			// A record claimed but not committed yet, or a closed slot
			// waiting for one: usually a commit microseconds away (the
			// worker rang between its claim and its commit), so look again
			// at once for pendingSpin, then at growing intervals, since a
			// worker killed in between leaves it until its liveness check.
			if spinTill.IsZero() {
				spinTill = now.Add(pendingSpin)
			}
			if now.Before(spinTill) {
				runtime.Gosched()
				continue
			}
			pendNap = min(max(2*pendNap, pendingNap), maxPendingNap)
			nap(pendNap)
			continue
		}
		pendNap, spinTill = 0, time.Time{}
		if coalescing {
			// Events came back to back: let the next ones gather for a
			// window, with the wake flag down, so that workers make no
			// system calls, for as long as windows find events. The first
			// window with none ends it: below about one event per window
			// a futex wake-up per event costs less than the windows.
			// (Doubling the nap after an empty window, as before, kept a
			// host serving one worker at 100 events/s in timer naps,
			// about three wake-ups per event.)
			if n > 0 {
				if err := h.window(nap); err != nil {
					return err
				}
				continue
			}
			coalescing = false
		}
		if !haveFutex {
			nap(time.Millisecond)
			continue
		}
		t0 := time.Now()
		woken, err := h.wait()
		if err != nil {
			return err
		}
		// Woken within a window of going to sleep: events come faster
		// than one wake-up each is worth. Gather them until a window
		// passes with none.
		coalescing = woken && time.Since(t0) < h.coalesce
	}
}

// hotFor is how long after a pass that found a backlog the host keeps
// passing back to back, whatever the passes in between find.
const hotFor = 10 * time.Millisecond

// idleCheckEvery is the liveness interval of a host with no worker
// attached: each wake-up from the futex costs the process more than the
// check (the Go runtime's monitor thread polls for a while after it), and
// four a second were most of an idle host's CPU.
const idleCheckEvery = time.Second

// defaultCoalesce is how long a host woken back to back lets events gather
// before its next pass: the latency an event may wait under a steady
// trickle, traded for one pass and no wake-up system calls per window.
// burstHorizon is how long a ring must last at its worker's latest rate
// (the burst rule in Drain): longer than a window or a pending nap, since
// on a loaded machine the host's next pass may come late.
const (
	defaultCoalesce = time.Millisecond
	burstHorizon    = 8 * time.Millisecond
)

// pendingSpin is how long the host passes back to back over a slot that
// holds a record claimed but not committed; pendingNap and maxPendingNap
// bound its sleeps after that. A timer sleep costs a wake-up of its own
// and, shorter than a millisecond, is often rounded up to one.
const (
	pendingSpin   = 50 * time.Microsecond
	pendingNap    = 50 * time.Microsecond
	maxPendingNap = 2 * time.Millisecond
)

// wait sleeps in futex wait on the header's hostWait word until a worker
// rings a doorbell (see Client.ringBell), the liveness interval or the
// maximum idle sleep passes, or Drain's context ends. The handshake is
// Dekker's: the host stores hostWait = 1 and then loads the doorbell words
// and claimWaits; a worker ORs its doorbell bit (or adds to claimWaits) and
// then loads hostWait. Both are full barriers, so either the host sees the
// bit and does not sleep, or the worker sees 1 and wakes it. A worker that
// finds its bit already set skips both: the bit's setter has done or will
// do this, and the host reads the slot after taking the bit.
func (h *Host) wait() (woken bool, err error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false, ErrClosed
	}
	w := u32(h.m, hdrWait)
	busy := len(h.pend) > 0
	if !busy {
		err = h.protect(func() {
			atomic.StoreUint32(w, 1)
			if busy = atomic.LoadUint64(u64(h.m, hdrClaimWaits)) != h.seenWaits; busy {
				return // a worker waits for a slot
			}
			for k := 0; k < h.bells; k++ {
				if busy = atomic.LoadUint64(u64(h.m, hdrBell+8*k)) != 0; busy {
					return
				}
			}
		})
	}
	if err != nil {
		err = h.damaged(err) // a fault here is damage like any other
		h.mu.Unlock()
		return false, err
	}
	next, most := h.liveEvery, h.maxIdle
	if h.active == 0 {
		// No worker attached: nothing to check but the file itself, and a
		// worker that attaches rings and wakes the host.
		next, most = max(next, idleCheckEvery), max(most, idleCheckEvery)
	}
	d := min(most, max(0, next-time.Since(h.lastLive)))
	if busy || d <= 0 {
		// Under the lock and the fault guard: Close may unmap, and the
		// file may be cut, the moment either is released.
		if err = h.protect(func() { atomic.StoreUint32(w, 0) }); err != nil {
			err = h.damaged(err)
		}
		h.mu.Unlock()
		return true, err
	}
	if rl := h.startRelay(); rl != nil {
		// Armed under the lock: Close stops the relay under it too.
		rl.Arm(d)
		h.ticking = false
		h.mu.Unlock()
		err = rl.Await()
	} else {
		h.mu.Unlock()
		// A futex call on a page that is gone fails with EFAULT; it raises
		// no signal.
		futexSleep(w, 1, d)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false, ErrClosed
	}
	if err != nil {
		return false, fmt.Errorf("shm: waiting for workers: %w", err)
	}
	err = h.protect(func() {
		// A worker that wakes the host clears the word first; a timeout
		// leaves it set.
		woken = atomic.SwapUint32(w, 0) == 0
	})
	if err != nil {
		err = h.damaged(err)
	}
	return woken, err
}

// wakeLocked makes a host asleep in wait return now: like a worker, it
// takes the word down before it wakes it, so that a wait about to start
// (the relay's, or futexSleep just after wait unlocked) returns at once
// instead of sleeping to its timeout. The caller holds h.mu.
func (h *Host) wakeLocked() {
	w := u32(h.m, hdrWait)
	_ = h.protect(func() { atomic.StoreUint32(w, 0) }) // a fault is damage the next pass reports
	futexWakeAll(w)
}

// startRelay returns the relay, started at the first call; nil without one.
// The caller holds h.mu.
func (h *Host) startRelay() relayhook.Relay {
	if h.relay == nil && !h.noRelay && relayhook.Start != nil {
		var err error
		if h.relay, err = relayhook.Start(u32(h.m, hdrWait)); err != nil {
			h.log.Warn("shm: waiting for workers from the Go scheduler (costs more CPU per wake-up)", "err", err)
			h.noRelay = true
		}
	}
	return h.relay
}

// window sleeps for a coalescing window, with hostWait left 0. With the
// relay it waits for the relay's next tick, which goes on every window
// until the next wait: two thread wake-ups a window, where a Go timer
// reset and fired a window costs the runtime a few more (netpollBreak
// and spinning Ms: 200 workers at 100 events/s, ~1000 windows a second).
func (h *Host) window(nap func(time.Duration)) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	rl := h.startRelay()
	if rl != nil && !h.ticking {
		rl.Tick(h.coalesce)
		h.ticking = true
	}
	h.mu.Unlock()
	if rl == nil {
		nap(h.coalesce)
		return nil
	}
	if err := rl.Await(); err != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.closed {
			return ErrClosed
		}
		return fmt.Errorf("shm: waiting for workers: %w", err)
	}
	return nil
}

// stopRelay ends the relay's thread, after wakeLocked. The caller holds h.mu.
func (h *Host) stopRelay() {
	if h.relay != nil {
		h.relay.Stop()
		h.relay, h.ticking = nil, false
	}
}

// unseen reports whether slot i has work the host's next pass will visit:
// its doorbell bit is set or the last pass left it pending. What wait
// checks for every slot at once.
func (h *Host) unseen(i int) bool {
	if atomic.LoadUint64(u64(h.m, hdrBell+i/64*8))&(1<<(i%64)) != 0 {
		return true
	}
	return slices.Contains(h.pend, i)
}

// DrainOnce applies every event committed when it is called, checks which
// workers are alive and reclaims the slots of dead or closed ones (a closed
// slot with a record still being written waits up to a second), and
// returns the number of events applied. Tests and shutdown paths use it;
// services use Drain.
func (h *Host) DrainOnce(r *registry.Registry) (int, error) {
	return h.drain(r, true)
}

// claimCheckEvery is how soon after a liveness check a worker waiting for a
// slot (claimWaits moved) gets another: reclaiming is then prompt, and a
// worker that waits for a full file costs the host at most a few hundred
// /proc reads a second.
const claimCheckEvery = 2 * time.Millisecond

func (h *Host) drain(r *registry.Registry, live bool) (n int, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, ErrClosed
	}
	if h.damage != nil {
		return 0, h.damage
	}
	// DrainOnce and a new registry (which binds every slot again) look at
	// every slot at once.
	full := live || h.reg != r
	if err := h.bind(r); err != nil {
		return 0, err
	}
	now := time.Now()
	tick := full || now.Sub(h.lastLive) >= h.liveEvery
	if tick {
		if err := h.checkFile(); err != nil {
			return 0, h.damaged(err)
		}
	}
	err = h.protect(func() {
		live = tick
		w := atomic.LoadUint64(u64(h.m, hdrClaimWaits))
		if w != h.seenWaits && now.Sub(h.lastLive) >= claimCheckEvery {
			live, full = true, true // a worker waits for a slot: find every free-able one
		}
		if live {
			h.lastLive, h.seenWaits = now, w
			h.countRefused()
			if now.Sub(h.lastFull) >= h.fullScanInterval() {
				full = true
			}
		}
		if full {
			h.lastFull = now
			h.fullScans.Add(1)
		}
		n = h.pass(live, full)
	})
	if err != nil {
		return n, h.damaged(err)
	}
	h.passes.Add(1)
	return n, nil
}

// ErrDamaged matches every *DamageError.
var ErrDamaged = errors.New("shm: file damaged")

// DamageError says that the file under the host was truncated, shrunk and
// regrown, removed or replaced. The host cannot trust what it maps any more
// (workers may be recording into pages that are gone, or into another
// file), so Drain stops with it and every later Drain or DrainOnce returns
// it: the process should exit and be restarted, and the next CreateHost
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
	if err := syscall.Fstat(int(h.f.Fd()), &st); err != nil {
		return &DamageError{Path: h.path, Err: ErrReplaced, Detail: fmt.Sprintf("fstat of the mapped file failed: %v", err)}
	}
	if st.Size < int64(h.g.fileSize) {
		return &DamageError{Path: h.path, Err: ErrTruncated, Detail: fmt.Sprintf("truncated to %d bytes; the host mapped %d", st.Size, h.g.fileSize)}
	}
	var err error
	if isFDPath(h.path) {
		err = syscall.Stat(h.path, &ps)
	} else {
		err = syscall.Lstat(h.path, &ps) // a symlink put in its place is a replacement
	}
	switch {
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR):
		return &DamageError{Path: h.path, Err: ErrReplaced, Detail: "removed from its path: new workers cannot find it"}
	case err != nil:
		return &DamageError{Path: h.path, Err: ErrReplaced, Detail: fmt.Sprintf("its path cannot be checked: %v", err)}
	case uint64(ps.Dev) != h.info.dev || ps.Ino != h.info.ino:
		return &DamageError{Path: h.path, Err: ErrReplaced, Detail: fmt.Sprintf("replaced: the path names another file (inode %d, the host maps inode %d), which nothing would drain", ps.Ino, h.info.ino)}
	}
	if perm := st.Mode & 0o7777; perm&0o077 != 0 {
		h.repairPerm(perm)
	}
	var dmg error
	err = h.protect(func() {
		if atomic.LoadUint64(u64(h.m, h.g.trailerOff()+trailerCanary)) != h.canary {
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

// countRefused adds the workers' ErrNoSlot refusals since the last check.
func (h *Host) countRefused() {
	r := atomic.LoadUint64(u64(h.m, hdrRefused))
	switch {
	case r > h.seenRefused:
		addSat(h.self.refused, r-h.seenRefused)
	case r < h.seenRefused:
		h.self.malformed.Inc() // running backwards: scribbled
	}
	h.seenRefused = r
}

// addSat adds d to a host counter, saturating at the largest int64: the
// amounts come from words any worker can scribble on, and a counter of
// the host must never wrap negative.
func addSat(c *registry.Counter, d uint64) {
	room := uint64(math.MaxInt64 - max(c.Value(), 0))
	if d = min(d, room); d > 0 {
		c.Add(int64(d))
	}
}

// Passes returns how many passes over the rings have completed, by Drain
// and DrainOnce. A running Drain passes at least every maximum idle sleep
// (250 ms by default, 1 s with no worker attached), so a count that stops
// moving means draining stopped:
// health checks read it as a heartbeat.
func (h *Host) Passes() uint64 { return h.passes.Load() }

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

func (h *Host) bind(r *registry.Registry) error {
	if h.reg == r {
		return nil
	}
	if r == nil {
		return errors.New("shm: nil registry")
	}
	p := h.prefix + "."
	var s selfMetrics
	var err error
	counter := func(name string) *registry.Counter {
		m, e := r.GetOrCreate(registry.KindCounter, p+name)
		if e != nil {
			err = errors.Join(err, e)
			return nil
		}
		return m.(*registry.Counter)
	}
	gauge := func(name string) *registry.Gauge {
		g, e := r.GaugeFunc(p+name, nil)
		if e != nil {
			err = errors.Join(err, e)
		}
		return g
	}
	s.events = counter("drained")
	s.malformed = counter("malformed")
	s.rejected = counter("rejected")
	s.discarded = counter("discarded")
	s.aborted = counter("aborted")
	s.reclaimed = counter("reclaimed")
	s.dropped = counter("dropped.all")
	s.refused = counter("refused")
	s.unknown = counter("liveness_unknown")
	s.repaired = counter("repaired")
	s.damaged = counter("damaged")
	s.workers = gauge("workers")
	s.lag = gauge("lag")
	if err != nil {
		return fmt.Errorf("shm: registering the host's metrics under %q: %w", h.prefix, err)
	}
	h.reg, h.self = r, s
	if h.repaired > 0 {
		s.repaired.Add(int64(h.repaired))
		h.repaired = 0
	}
	h.seenRefused = 0 // the new registry counts the file's refusals from the start
	h.aggs = map[string]*gaugeAgg{}
	for i := range h.slots {
		h.unwatch(&h.slots[i])
		h.slots[i] = hslot{}
	}
	h.active, h.shown, h.pend = 0, -1, h.pend[:0]
	return nil
}

func (h *Host) slotU64(i, off int) *uint64 { return u64(h.m, h.g.slotOff(i)+off) }

type passStats struct {
	events, malformed, discarded, aborted, lag int
	more                                       bool // a slot was left at its budget with records committed
}

func (ps *passStats) add(o passStats) {
	ps.more = ps.more || o.more
	ps.events += o.events
	ps.malformed += o.malformed
	ps.discarded += o.discarded
	ps.aborted += o.aborted
	ps.lag += o.lag
}

// slotWork is a bound slot a pass drains, with the state word the pass
// read for it.
type slotWork struct {
	i  int
	w  uint64
	c0 uint64 // the consumer index before the drain
}

// testHookParallel tells a test how many goroutines a pass drains on.
var testHookParallel func(procs int)

// parallelMin is the backlog at which a slot is worth a goroutine of its
// own: the hand-off costs microseconds, and 4Ki records take ~30 µs. A
// quarter of a default ring, so that default rings get there before they
// fill.
const parallelMin = 4 << 10

// drainSlots drains the slots of a pass. When two or more hold a large
// backlog it drains them on up to GOMAXPROCS goroutines: each slot has its
// own ring, definitions and state, the registry is safe for concurrent use
// (and shards histograms per P), and what slots share (the gauge
// aggregates' map) is locked. A host serving many busy workers then applies
// on every core instead of one.
func (h *Host) drainSlots(todo []slotWork, ps *passStats) {
	big := 0
	for _, t := range todo {
		if atomic.LoadUint64(h.slotU64(t.i, slotReserve))-h.slots[t.i].consumer >= parallelMin {
			big++
		}
	}
	procs := big
	if procs >= 2 { // GOMAXPROCS takes the scheduler's lock: not on every pass
		procs = min(procs, runtime.GOMAXPROCS(0))
	}
	if procs < 2 {
		for _, t := range todo {
			h.drainSlot(t.i, &h.slots[t.i], ps, false, 0)
		}
		return
	}
	if testHookParallel != nil {
		testHookParallel(procs)
	}
	var next atomic.Int64
	stats := make([]passStats, procs)
	panics := make([]any, procs)
	work := func(k int) {
		// A fault on the mapping (the file truncated under the host) is
		// re-raised on the pass's goroutine, where protect reports it.
		defer func() { panics[k] = recover() }()
		for {
			j := int(next.Add(1)) - 1
			if j >= len(todo) {
				return
			}
			t := todo[j]
			h.drainSlot(t.i, &h.slots[t.i], &stats[k], false, 0)
		}
	}
	var wg sync.WaitGroup
	for k := 1; k < procs; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			debug.SetPanicOnFault(true) // per goroutine; this one ends here
			work(k)
		}()
	}
	work(0)
	wg.Wait()
	for k := range stats {
		ps.add(stats[k])
	}
	for _, p := range panics {
		if p != nil {
			panic(p)
		}
	}
}

// fullScanEvery is how many liveness intervals apart a pass reads the
// state word of every slot (10 s by default), and not only of the slots
// whose doorbell rang, the bound ones and those being claimed. It finds
// what rang no bell: a worker that died between its claim and its first
// ring, or a client that skips the doorbell. Reading one word of each
// slot touches one page of each, 1-5 µs apiece on a VM: 4096 slots every
// 250 ms would be most of an idle host's cost. A worker waiting for a slot
// (claimWaits) gets a full scan at once.
//
// Files of more than fullScanSlots slots are scanned proportionally less
// often (4096 slots: every 160 s), so that the scans cost an idle host
// the same whatever its size: at 10 s, 3-20 ms per scan of 4096 slots
// were 0.03-0.2% of a core, the idle target being 0.1% in all.
const (
	fullScanEvery = 40
	fullScanSlots = 256
)

func (h *Host) fullScanInterval() time.Duration {
	return fullScanEvery * h.liveEvery * time.Duration(max(1, h.g.slots/fullScanSlots))
}

// pass drains the slots whose doorbell rang and those the last pass left
// pending. With live (a liveness check) it also visits every bound slot
// and every slot being claimed, checks that their workers still run and
// refreshes their dropped counts and lag; with full it visits every slot.
// Taking a doorbell word (swap to 0) comes before reading any slot it
// covers, so a worker that rings after the swap rings again for the next
// pass, and one whose ring the swap took has its claim, definition or
// state change seen by this pass.
func (h *Host) pass(live, full bool) int {
	var ps passStats
	h.busiest = 0
	visit := h.visit[:0]
	mark := func(i int) {
		if hs := &h.slots[i]; !hs.marked {
			hs.marked = true
			visit = append(visit, i)
		}
	}
	for k := 0; k < h.bells; k++ {
		p := u64(h.m, hdrBell+8*k)
		if atomic.LoadUint64(p) == 0 {
			continue // no write: the line stays shared with the workers
		}
		for bits := atomic.SwapUint64(p, 0); bits != 0 && !full; bits &= bits - 1 {
			// Bits past the file's slots (a scribble) are taken and ignored.
			if i := k*64 + mathbits.TrailingZeros64(bits); i < h.g.slots {
				mark(i)
			}
		}
	}
	switch {
	case full:
		visit = visit[:0]
		for i := range h.slots {
			visit = append(visit, i)
		}
	case live:
		for i := range h.slots {
			if hs := &h.slots[i]; hs.bound || hs.claiming {
				mark(i)
			}
		}
		fallthrough
	default:
		for _, i := range h.pend {
			mark(i)
		}
	}
	if live {
		h.pollExits()
	}
	h.pend = h.pend[:0]
	todo := h.todo[:0]
	for _, i := range visit {
		hs := &h.slots[i]
		hs.marked = false
		w := atomic.LoadUint64(h.slotU64(i, slotState))
		pid, gen, st := unpackState(w)
		hs.claiming = false
		switch st {
		case StateFree:
			if hs.bound {
				h.unbind(i, hs)
			}
			continue
		case StateActive, StateClosed:
		case StateReclaiming:
			// A host died in the middle of reclaiming; finish its work.
			h.reset(i, w)
			continue
		case StateClaiming:
			// A worker is scrubbing the slot it claimed; nothing is bound
			// until it is ACTIVE. One that died doing it leaves the slot
			// to be reclaimed.
			if hs.bound {
				h.unbind(i, hs)
			}
			// By pid alone: startTime is written after the scrub, and
			// until then holds whatever the FREE slot held.
			if live && !h.alive(pid, 0) {
				h.reset(i, w)
				h.self.reclaimed.Inc()
			} else {
				hs.claiming = true // liveness checks look at it until it is ACTIVE
			}
			continue
		default:
			ps.malformed++
			h.finish(i, hs, w, &ps)
			continue
		}
		if !hs.boundTo(pid, gen) {
			h.unbind(i, hs)
			*hs = hslot{bound: true, pid: pid, gen: gen}
			ring := h.g.slotOff(i) + h.g.ringOffset
			populate(h.m, ring, ring+h.g.ringRecs*wire.RecordSize)
			h.recover(i, hs, &ps)
			h.loadDefs(i, hs)
			if st == StateActive {
				h.watch(i, hs)
			}
		}
		// One rule on every pass: a closed slot still waiting for a
		// half-written record is not a worker.
		h.setActive(hs, st == StateActive)
		todo = append(todo, slotWork{i, w, hs.consumer})
	}
	h.visit = visit
	h.todo = todo
	h.drainSlots(todo, &ps)
	for _, t := range todo {
		i, w, hs := t.i, t.w, &h.slots[t.i]
		h.busiest = max(h.busiest, int(hs.consumer-t.c0))
		pid, _, st := unpackState(w)
		// Metrics a worker defined but has not recorded yet appear within
		// a pass, as they would in an in-process registry (Client.define
		// rings the doorbell).
		h.loadDefs(i, hs)
		// A closed slot is reclaimed on the pass that finds it, not at the
		// next liveness check: short-lived workers must not wait for slots.
		if closed := st == StateClosed || pid == 0; live || closed {
			if live {
				h.refresh(i, hs, &ps)
			}
			if closed || !h.running(i, hs) {
				if !h.finish(i, hs, w, &ps) {
					h.pend = append(h.pend, i) // a closed slot waiting for a record
				}
				continue
			}
		}
		if res := atomic.LoadUint64(h.slotU64(i, slotReserve)); res != hs.consumer && res-hs.consumer <= uint64(h.g.ringRecs) {
			h.pend = append(h.pend, i) // claimed, not committed yet
		}
	}
	h.more = ps.more
	s := &h.self
	if ps.events > 0 {
		s.events.Add(int64(ps.events))
	}
	if ps.malformed > 0 {
		s.malformed.Add(int64(ps.malformed))
	}
	if ps.discarded > 0 {
		s.discarded.Add(int64(ps.discarded))
	}
	if ps.aborted > 0 {
		s.aborted.Add(int64(ps.aborted))
	}
	if live || h.active != h.shown {
		// A worker that just attached is counted at once, not at the next
		// liveness check (which alone can tell that one has died).
		s.workers.Set(float64(h.active))
		h.shown = h.active
	}
	if live {
		s.lag.Set(float64(ps.lag))
	}
	return ps.events
}

// setActive keeps the count of ACTIVE bound slots behind the workers gauge:
// a pass no longer visits every slot to count them.
func (h *Host) setActive(hs *hslot, a bool) {
	if hs.active != a {
		hs.active = a
		if a {
			h.active++
		} else {
			h.active--
		}
	}
}

// recover reads the indices of a slot the host has not seen before and
// completes a release a previous host died in the middle of.
func (h *Host) recover(i int, hs *hslot, ps *passStats) {
	c := atomic.LoadUint64(h.slotU64(i, slotConsumer))
	t := atomic.LoadUint64(h.slotU64(i, slotTaking))
	hs.consumer = c
	switch {
	case t > c && t-c <= uint64(h.g.ringRecs):
		h.release(i, c, t)
		hs.consumer = t
	case t != c:
		ps.malformed++ // taking is only ever equal to or just ahead of consumer
		atomic.StoreUint64(h.slotU64(i, slotTaking), c)
	}
}

// alive reports whether the process that claimed a slot still runs. The
// start time tells a reused pid from the original process; a slot whose
// worker died between its claim and storing the start time (0) is judged
// by the pid alone. When /proc cannot be read (the process is out of file
// descriptors, say) the answer is unknown: it is counted
// (<prefix>.liveness_unknown), kill(pid, 0) — which needs no descriptor —
// still tells a pid that no longer exists, and the slot is kept only until
// the next check asks again. It is never taken as "alive for good".
func (h *Host) alive(pid uint32, start uint64) bool {
	s, ok, err := procStart(int(pid))
	if err == nil {
		return ok && (start == 0 || s == start)
	}
	if h.self.unknown != nil {
		h.self.unknown.Inc()
	}
	return !pidGone(pid)
}

// droppedName is the counter of what one worker dropped, a per-worker
// series like a GaugePerWorker gauge's.
func (h *Host) droppedName(pid uint32) string { return perWorkerName(h.prefix+".dropped", pid) }

// refresh reads the worker-written counters that the hot path must not
// touch on every pass: dropped events and the backlog.
func (h *Host) refresh(i int, hs *hslot, ps *passStats) {
	d := atomic.LoadUint64(h.slotU64(i, slotDropped))
	switch {
	case d > hs.dropped:
		addSat(h.self.dropped, d-hs.dropped)
		if hs.droppedC == nil {
			if m, err := h.reg.GetOrCreate(registry.KindCounter, h.droppedName(hs.pid)); err == nil {
				hs.droppedC = m.(*registry.Counter)
			}
		}
		if hs.droppedC != nil {
			addSat(hs.droppedC, d-hs.dropped)
		}
		hs.dropped = d
	case d < hs.dropped:
		ps.malformed++ // a counter running backwards: resynchronise
		hs.dropped = d
	}
	res := atomic.LoadUint64(h.slotU64(i, slotReserve))
	if res >= hs.consumer {
		ps.lag += int(min(res-hs.consumer, uint64(h.g.ringRecs)))
	} else {
		ps.malformed++
	}
}

// drainSlot applies the records committed in slot i's ring, at most one
// ring's worth, and releases them in chunks of releaseEvery: for each
// chunk it records how far it consumed in the taking index, zeroes the
// records, and publishes the consumer index. A host killed anywhere in
// between leaves taking > consumer, and the next host skips exactly those
// records (they were applied to the dead host's registry), so records are
// never applied twice by live hosts nor lost by a stalled ring. With
// skipHoles (the worker is gone), records claimed below the reserve index
// but never committed are counted as aborted and passed over.
func (h *Host) drainSlot(i int, hs *hslot, ps *passStats, skipHoles bool, reserve uint64) {
	consP := h.slotU64(i, slotConsumer)
	if atomic.LoadUint64(consP) != hs.consumer {
		ps.malformed++ // someone other than this host wrote the consumer index
	}
	ring := h.ringOf(i)
	// A batch gathers a chunk's records, applied before they are released;
	// it is empty between chunks, so slots drained one after another share
	// one (a batch per slot would cost 4096-slot files 19 MiB).
	b := batchPool.Get().(*apply.Batch)
	defer batchPool.Put(b)
	handle := func(recs []byte) { b.Apply(hs.tab, recs) }
	for left := h.g.ringRecs; left > 0; {
		c := hs.consumer
		// A worker publishes a definition before any record naming it, so
		// definitions loaded after the records were seen cover them all.
		end, holes, blocked := ring.read(c, min(left, releaseEvery), skipHoles, reserve, func(recs []byte) {
			if len(hs.defs) < int(atomic.LoadUint64(h.slotU64(i, slotDefCount))) {
				h.loadDefs(i, hs)
			}
			handle(recs)
		})
		if end == c {
			return
		}
		discarded := b.Discarded() + hs.gaugeBad
		rejected, _ := b.Flush(hs.tab)
		hs.gaugeBad = 0
		ps.aborted += holes
		ps.discarded += discarded
		ps.malformed += int(rejected)
		ps.events += int(end-c) - holes - discarded - int(rejected)
		if testHookBeforeRelease != nil {
			testHookBeforeRelease(i, end-c)
		}
		h.release(i, c, end)
		hs.consumer = end
		left -= int(end - c)
		if blocked {
			return
		}
	}
	ps.more = true // the budget ran out with the last record committed: likely more
}

// releaseEvery is how many records drainSlot applies before it releases
// them (64 KiB of ring, still in cache when it zeroes them): a worker
// writing faster than the host drains sees room appear every 4 Ki records
// rather than once per pass. Against two workers writing flat out into
// default 16 Ki-record rings it cut the events dropped from 79% to 61%
// (benchstat, 6 interleaved rounds of BenchmarkTransportE2E/shm-default-ring).
const releaseEvery = 4096

// testHookBeforeRelease lets a test kill a host process between applying
// records and releasing them; slots may be drained concurrently, so the
// hooks are told which slot.
var testHookBeforeRelease, testHookMidRelease func(slot int, records uint64)

// release zeroes records [from, to) and publishes to as the consumer index,
// bracketed by the taking index for crash recovery (see drainSlot).
func (h *Host) release(i int, from, to uint64) {
	atomic.StoreUint64(h.slotU64(i, slotTaking), to)
	if testHookMidRelease != nil {
		testHookMidRelease(i, to-from)
	}
	ring := h.m[h.g.slotOff(i)+h.g.ringOffset:][:h.g.ringRecs*wire.RecordSize]
	a, b := int(from&uint64(h.g.ringRecs-1)), int(to-from)
	if a+b <= h.g.ringRecs {
		clear(ring[a*wire.RecordSize : (a+b)*wire.RecordSize])
	} else {
		clear(ring[a*wire.RecordSize:])
		clear(ring[:(a+b-h.g.ringRecs)*wire.RecordSize])
	}
	atomic.StoreUint64(h.slotU64(i, slotConsumer), to)
}

// loadDefs reads the definitions slot i's worker published since the last
// call and binds each to a registry metric, or marks it rejected.
func (h *Host) loadDefs(i int, hs *hslot) {
	n := atomic.LoadUint64(h.slotU64(i, slotDefCount))
	if n == uint64(len(hs.defs)) {
		return
	}
	if n > uint64(h.g.maxDefs) {
		if n != hs.badDefs {
			hs.badDefs = n
			h.self.malformed.Inc()
		}
		n = uint64(h.g.maxDefs)
	}
	base := h.g.slotOff(i) + h.g.defOffset
	for id := len(hs.defs); id < int(n); id++ {
		e := h.m[base+id*DefSize:][:DefSize]
		d, m := h.bindDef(i, hs, e)
		ent := apply.Discard(d.kind)
		if d.rejected {
			h.self.rejected.Inc()
		} else if d.kind == wire.KindGauge {
			ent, _ = apply.NewEntry(d.kind, slotGauge{d.g, i, &hs.gaugeBad})
		} else {
			ent, _ = apply.NewEntry(d.kind, m)
		}
		hs.defs = append(hs.defs, d)
		hs.tab = append(hs.tab, ent)
	}
}

// bindDef binds one definition entry e of slot i to the registry: the
// metric its records go to (nil for a gauge, whose values go to d.g), or
// d.rejected.
func (h *Host) bindDef(i int, hs *hslot, e []byte) (d hdef, m registry.Metric) {
	k, mode, nl := wire.Kind(e[defKind]), GaugeMode(e[defMode]), int(e[defNameLen])
	d = hdef{kind: k, rejected: true}
	if !k.Valid() || e[defZero] != 0 || nl == 0 || (k == wire.KindGauge) != mode.Valid() || (k != wire.KindGauge && mode != 0) {
		return d, nil
	}
	name := string(e[defName : defName+nl])
	d.name = name
	if wire.ValidateName(name) != nil || reservedName(name) || wire.Under(name, h.prefix) {
		return d, nil // workers may not write into the host's own metrics
	}
	if k == wire.KindGauge {
		h.aggMu.Lock()
		defer h.aggMu.Unlock()
		a := h.aggs[name]
		if a == nil {
			a = &gaugeAgg{mode: mode, vals: map[int]gval{}}
			if mode != GaugePerWorker {
				_, existed := h.reg.Get(name)
				g, err := h.reg.GaugeFunc(name, nil)
				if err != nil {
					return d, nil
				}
				a.g, a.owned = g, !existed
			}
			h.aggs[name] = a
		} else if a.mode != mode {
			return d, nil
		}
		if mode == GaugePerWorker {
			g, err := h.reg.GaugeFunc(perWorkerName(name, hs.pid), nil)
			if err != nil {
				if a.refs == 0 {
					delete(h.aggs, name)
				}
				return d, nil
			}
			a.join(i, g)
		}
		a.refs++
		d.g, d.rejected = a, false
		if atomic.LoadUint32((*uint32)(unsafeAdd(&e[defGaugeSet], 0))) != 0 {
			f := math.Float64frombits(atomic.LoadUint64((*uint64)(unsafeAdd(&e[defGaugeVal], 0))))
			if f-f == 0 {
				a.set(i, f)
			}
		}
		return d, nil
	}
	m, err := h.reg.GetOrCreate(k, name)
	if err != nil {
		return d, nil
	}
	d.rejected = false
	return d, m
}

// finish handles a slot whose worker is gone (dead, closed or corrupt):
// it applies every committed record, skips records the worker claimed but
// never committed, and frees the slot. It reports false if the slot must
// wait: a closed worker that is still running may be committing a record.
func (h *Host) finish(i int, hs *hslot, w uint64, ps *passStats) bool {
	pid, _, st := unpackState(w)
	if hs.bound {
		h.drainSlot(i, hs, ps, false, 0)
	}
	res := atomic.LoadUint64(h.slotU64(i, slotReserve))
	holes := hs.bound && res > hs.consumer && res-hs.consumer <= uint64(h.g.ringRecs)
	if holes && st == StateClosed && h.alive(pid, atomic.LoadUint64(h.slotU64(i, slotStart))) {
		if hs.holeAt.IsZero() {
			hs.holeAt = time.Now()
		}
		if time.Since(hs.holeAt) < time.Second {
			return false
		}
	}
	if holes {
		h.drainSlot(i, hs, ps, true, res)
	}
	if hs.bound {
		h.refresh(i, hs, ps)
	}
	h.unbind(i, hs)
	h.reset(i, w)
	h.self.reclaimed.Inc()
	return true
}

// unbind forgets slot i's occupant: its gauge values stop counting and its
// per-worker series leave the registry. Cumulative metrics keep what it
// recorded.
func (h *Host) unbind(i int, hs *hslot) {
	if !hs.bound {
		return
	}
	for _, d := range hs.defs {
		if d.g == nil || d.rejected {
			continue
		}
		if d.g.remove(i) != nil {
			h.reg.Unregister(perWorkerName(d.name, hs.pid))
		}
		h.releaseAgg(d.name, d.g)
	}
	if hs.droppedC != nil {
		h.reg.Unregister(h.droppedName(hs.pid))
	}
	h.setActive(hs, false)
	h.unwatch(hs)
	*hs = hslot{}
}

// releaseAgg drops one worker's definition of a cross-process gauge. When
// no bound worker defines it any more the aggregate is forgotten and its
// combined gauge leaves the registry (a gauge no live process defines has
// no value to report), so a stream of workers defining new gauge names
// costs the host nothing once they are gone; the next worker to define
// the name starts afresh and chooses its mode.
func (h *Host) releaseAgg(name string, a *gaugeAgg) {
	h.aggMu.Lock()
	defer h.aggMu.Unlock()
	if a.refs--; a.refs > 0 {
		return
	}
	if h.aggs[name] == a {
		delete(h.aggs, name)
	}
	if a.owned {
		h.reg.Unregister(name)
	}
}

// reset zeroes slot i and frees it. The state goes through
// StateReclaiming so that no worker claims the slot half-reset; a host that
// dies in between leaves StateReclaiming, which the next host finishes.
func (h *Host) reset(i int, w uint64) {
	_, gen, _ := unpackState(w)
	st := h.slotU64(i, slotState)
	rw := packState(0, gen, StateReclaiming)
	if w != rw && !atomic.CompareAndSwapUint64(st, w, rw) {
		return // changed under us; look again next pass
	}
	base := h.g.slotOff(i)
	n := atomic.LoadUint64(h.slotU64(i, slotDefCount))
	n = min(n, uint64(h.g.maxDefs))
	zeroRange(h.m, base+h.g.defOffset, base+h.g.defOffset+int(n)*DefSize)
	zeroRange(h.m, base+h.g.ringOffset, base+h.g.ringOffset+h.g.ringRecs*wire.RecordSize)
	// Every word after the state word, reserved ones included: a FREE slot
	// is all zero (a worker still scrubs it when it claims it).
	for off := slotStart; off < slotDefs; off += 8 {
		atomic.StoreUint64(h.slotU64(i, off), 0)
	}
	atomic.StoreUint64(st, packState(0, gen, StateFree))
}
