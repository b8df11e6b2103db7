package shm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mmap "github.com/edsrzf/mmap-go"

	"github.com/tapes-go/tapes/registry"
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

	liveEvery time.Duration
	maxIdle   time.Duration
	lastLive  time.Time

	passes atomic.Uint64 // completed drain passes (Passes)

	reg   *registry.Registry
	self  selfMetrics
	slots []hslot
	todo  []slotWork // a pass's slots, kept to spare the allocation

	// aggMu guards aggs: slots drained concurrently (drainSlots) may bind
	// gauge definitions at the same time.
	aggMu sync.Mutex
	aggs  map[string]*gaugeAgg
}

type selfMetrics struct {
	events, malformed, rejected, discarded, aborted, reclaimed, dropped *registry.Counter
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
	defs     []hdef
	pending  []uint32 // ids of defs holding records not yet applied (see hdef.queued)
	badDefs  uint64   // last out-of-range definition count reported
	holeAt   time.Time
}

// boundTo reports whether the host has bound this slot to the worker the
// state word names (pid and generation): otherwise the next pass binds it.
func (hs *hslot) boundTo(pid, gen uint32) bool { return hs.bound && hs.pid == pid && hs.gen == gen }

type hdef struct {
	kind     wire.Kind
	rejected bool
	// w0 is the first word of this definition's records if they can skip
	// apply's checks (an accepted counter, meter, timer or histogram), and
	// 0, which no committed record has, otherwise.
	w0   uint64
	name string
	c    *registry.Counter
	m    *registry.Meter
	t    *registry.Timer
	h    *registry.Histogram
	g    *gaugeAgg

	// drainSlot gathers a chunk's records per definition and applies them
	// together before it releases them (flushPending): the sum of a
	// counter's or meter's records as one Add or Mark, a timer's or
	// histogram's values through UpdateMany, which pays the clock read and
	// the P pin once per slice. Applying a chunk's records at one instant
	// changes nothing a reader can see, and it roughly halves the host's
	// cost per event on a counter/timer mix.
	queued bool
	summed bool // a counter or meter: its records are summed into sum
	sum    int64
	vals   *[flushValues]uint64 // a timer's or histogram's values, as the records carry them
	nvals  int
}

// CreateHost creates the shm file at path (DefaultPath if path is empty)
// with mode 0600, or attaches to the existing one after validating it, and
// takes the file's flock; it fails with ErrLocked while another host holds
// it. A new file appears under its name only once its header is complete
// (it is built under a temporary name and linked into place).
func CreateHost(path string, cfg Config) (*Host, error) {
	cfg = cfg.withDefaults()
	if err := wire.ValidateName(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("shm: Config.Prefix: %w", err)
	}
	if path == "" {
		p, err := DefaultPath()
		if err != nil {
			return nil, err
		}
		path = p
	}
	g, err := newGeometry(cfg.Slots, cfg.RingRecords, cfg.MaxMetrics)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		f, size, err := openFile(path, os.O_RDWR)
		if errors.Is(err, os.ErrNotExist) && attempt < 3 {
			created, err := create(path, g)
			if err != nil {
				return nil, err
			}
			if !created {
				continue // another host created it first: attach to theirs
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		return attach(path, f, size, cfg.Prefix)
	}
}

// create builds a complete file under a temporary name and links it to
// path, so that no worker or host ever sees a half-written header.
func create(path string, g geometry) (bool, error) {
	tmp := fmt.Sprintf("%s.tmp-%d-%d", path, os.Getpid(), time.Now().UnixNano())
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return false, fmt.Errorf("shm: %w", err)
	}
	defer os.Remove(tmp)
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return false, fmt.Errorf("shm: %w", err)
	}
	if err := f.Truncate(int64(g.fileSize)); err != nil {
		return false, fmt.Errorf("shm: sizing %s: %w", tmp, err)
	}
	hdr := make([]byte, HeaderSize)
	g.putHeader(hdr)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return false, fmt.Errorf("shm: writing header: %w", err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("shm: %w", err)
	}
	return true, nil
}

func attach(path string, f *os.File, size int64, prefix string) (*Host, error) {
	fail := func(err error) (*Host, error) {
		f.Close()
		return nil, err
	}
	if err := flock(f); err != nil {
		return fail(err)
	}
	hdr := make([]byte, HeaderSize)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return fail(fmt.Errorf("%w: %s: reading header: %v", ErrTruncated, path, err))
	}
	g, err := validateHeader(hdr, size)
	if err != nil {
		return fail(fmt.Errorf("%w (%s)", err, path))
	}
	m, err := mapFile(f, g.fileSize, true)
	if err != nil {
		return fail(err)
	}
	return &Host{
		path: path, f: f, m: m, g: g, prefix: prefix,
		liveEvery: 250 * time.Millisecond,
		maxIdle:   100 * time.Millisecond,
		slots:     make([]hslot, g.slots),
	}, nil
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
	// A Drain asleep in futex wait returns ErrClosed now, not at its timeout.
	_ = h.protect(func() { futexWakeAll(u32(h.m, hdrWait)) })
	err := h.m.Unmap()
	if cerr := h.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// DrainOption tunes Drain.
type DrainOption func(*Host)

// WithMaxIdleSleep sets the longest sleep between passes when no events
// arrive (default 100ms). Workers wake a sleeping host through a futex, so
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
// is committed once more and returns nil. It polls adaptively: while
// events arrive it passes over the rings back to back; when they stop it
// sleeps, doubling from 50µs to 1ms, and after that blocks in a futex wait
// that the next worker to record wakes (Linux), with a timeout for liveness
// checks (WithMaxIdleSleep, 100 ms by default). An idle host thus wakes
// about ten times a second, and an event after a quiet period reaches the
// registry in well under a millisecond, ~2.5 ms at worst on the project's
// 2-vCPU machine (docs/RATIONALE.md, "Polling without burning a core"). It
// returns an error only if the file becomes unusable (ErrTruncated when it
// is truncated under the host) or r refuses the host's own metrics.
func (h *Host) Drain(ctx context.Context, r *registry.Registry, opts ...DrainOption) error {
	h.mu.Lock()
	for _, o := range opts {
		o(h)
	}
	wait := u32(h.m, hdrWait)
	h.mu.Unlock()
	// Cancellation must not wait for the futex timeout.
	stop := context.AfterFunc(ctx, func() {
		h.mu.Lock()
		if !h.closed {
			futexWakeAll(wait)
		}
		h.mu.Unlock()
	})
	defer stop()
	const minSleep = 50 * time.Microsecond
	sleep := time.Duration(0)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		if ctx.Err() != nil {
			_, err := h.drain(r, true)
			return err
		}
		n, err := h.drain(r, false)
		if err != nil {
			return err
		}
		switch {
		case n >= 256:
			sleep = 0
			continue
		case n > 0:
			sleep /= 2
		default:
			sleep = max(minSleep, min(sleep*2, time.Millisecond))
		}
		if sleep < minSleep {
			runtime.Gosched()
			continue
		}
		if sleep == time.Millisecond && haveFutex {
			// Idle for a few milliseconds: sleep until a worker wakes us.
			woken, err := h.wait()
			if err != nil {
				return err
			}
			if woken {
				sleep = 0
			}
			continue
		}
		t.Reset(sleep)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

// wait sleeps in futex wait on the header's hostWait word until a worker
// claims a record (see Client.put), the liveness interval or the maximum
// idle sleep passes, or Drain's context ends. The handshake is Dekker's:
// the host stores hostWait = 1 and then loads every slot's reserve index,
// state word and definition count; a worker CASes reserve or its state
// word, or stores the definition count, and then loads hostWait. Both are
// full barriers, so either the host sees the new record, slot or
// definition and does not sleep, or the worker sees 1 and wakes it.
func (h *Host) wait() (woken bool, err error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false, ErrClosed
	}
	w := u32(h.m, hdrWait)
	busy := false
	err = h.protect(func() {
		atomic.StoreUint32(w, 1)
		for i := range h.slots {
			if busy = h.unseen(i); busy {
				return
			}
		}
	})
	d := min(h.maxIdle, max(0, h.liveEvery-time.Since(h.lastLive)))
	h.mu.Unlock()
	if err != nil || busy || d <= 0 {
		atomic.StoreUint32(w, 0)
		return true, err
	}
	futexSleep(w, 1, d)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false, ErrClosed
	}
	err = h.protect(func() {
		// A worker that wakes the host clears the word first; a timeout
		// leaves it set.
		woken = atomic.SwapUint32(w, 0) == 0
	})
	return woken, err
}

// unseen reports whether slot i holds something the host's last pass did
// not see: a record, a worker that claimed the slot since, or a new
// definition. Definitions count only above what the host has read, up to
// the table's size: a count scribbled lower or past the table cannot keep
// the host awake. (A reserve index scribbled ahead still can: a pass finds
// nothing committed there and the host keeps to its short sleeps.)
func (h *Host) unseen(i int) bool {
	hs := &h.slots[i]
	pid, gen, st := unpackState(atomic.LoadUint64(h.slotU64(i, slotState)))
	if (st == StateActive || st == StateClosed) && !hs.boundTo(pid, gen) {
		return true
	}
	if !hs.bound {
		return false
	}
	defs := min(atomic.LoadUint64(h.slotU64(i, slotDefCount)), uint64(h.g.maxDefs))
	return atomic.LoadUint64(h.slotU64(i, slotReserve)) != hs.consumer || defs > uint64(len(hs.defs))
}

// DrainOnce applies every event committed when it is called, checks which
// workers are alive and reclaims the slots of dead or closed ones (a closed
// slot with a record still being written waits up to a second), and
// returns the number of events applied. Tests and shutdown paths use it;
// services use Drain.
func (h *Host) DrainOnce(r *registry.Registry) (int, error) {
	return h.drain(r, true)
}

func (h *Host) drain(r *registry.Registry, live bool) (n int, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, ErrClosed
	}
	if err := h.bind(r); err != nil {
		return 0, err
	}
	if live || time.Since(h.lastLive) >= h.liveEvery {
		live = true
		h.lastLive = time.Now()
		if size, err := fileSize(h.f); err != nil || size < int64(h.g.fileSize) {
			return 0, fmt.Errorf("%w: %s is now %d bytes, the host mapped %d", ErrTruncated, h.path, size, h.g.fileSize)
		}
	}
	err = h.protect(func() { n = h.pass(live) })
	if err == nil {
		h.passes.Add(1)
	}
	return n, err
}

// Passes returns how many passes over the rings have completed, by Drain
// and DrainOnce. A running Drain passes at least every maximum idle sleep
// (100ms by default), so a count that stops moving means draining stopped:
// health checks read it as a heartbeat.
func (h *Host) Passes() uint64 { return h.passes.Load() }

// protect runs f with faults on the mapping turned into a recovered panic:
// the file can be truncated by anyone who can write it, and touching a page
// past its new end raises SIGBUS.
func (h *Host) protect(f func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			if fe, ok := p.(interface{ Addr() uintptr }); ok {
				err = fmt.Errorf("%w: fault at %#x reading %s (truncated under the host?)", ErrTruncated, fe.Addr(), h.path)
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
	s.dropped = counter("dropped.total")
	s.workers = gauge("workers")
	s.lag = gauge("lag")
	if err != nil {
		return fmt.Errorf("shm: registering the host's metrics under %q: %w", h.prefix, err)
	}
	h.reg, h.self = r, s
	h.aggs = map[string]*gaugeAgg{}
	for i := range h.slots {
		h.slots[i] = hslot{}
	}
	return nil
}

func (h *Host) slotU64(i, off int) *uint64 { return u64(h.m, h.g.slotOff(i)+off) }

type passStats struct{ events, malformed, discarded, aborted, lag int }

func (ps *passStats) add(o passStats) {
	ps.events += o.events
	ps.malformed += o.malformed
	ps.discarded += o.discarded
	ps.aborted += o.aborted
	ps.lag += o.lag
}

// slotWork is a bound slot a pass drains, with the state word the pass
// read for it.
type slotWork struct {
	i int
	w uint64
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

func (h *Host) pass(live bool) int {
	var ps passStats
	workers := 0
	newWorker := false
	todo := h.todo[:0]
	for i := range h.slots {
		w := atomic.LoadUint64(h.slotU64(i, slotState))
		pid, gen, st := unpackState(w)
		hs := &h.slots[i]
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
			newWorker = true
		}
		todo = append(todo, slotWork{i, w})
	}
	h.todo = todo
	h.drainSlots(todo, &ps)
	for _, t := range todo {
		i, w, hs := t.i, t.w, &h.slots[t.i]
		pid, _, st := unpackState(w)
		// Metrics a worker defined but has not recorded yet appear within
		// a pass, as they would in an in-process registry (Client.define
		// wakes an idle host).
		h.loadDefs(i, hs)
		if live {
			h.refresh(i, hs, &ps)
			dead := st == StateClosed || pid == 0
			if !dead {
				dead = !h.alive(pid, atomic.LoadUint64(h.slotU64(i, slotStart)))
			}
			if dead && h.finish(i, hs, w, &ps) {
				continue
			}
		}
		// One rule on every pass: a closed slot still waiting for a
		// half-written record is not a worker.
		if st == StateActive {
			workers++
		}
	}
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
	if live || newWorker {
		// A worker that just attached is counted at once, not at the next
		// liveness check (which alone can tell that one has died).
		s.workers.Set(float64(workers))
	}
	if live {
		s.lag.Set(float64(ps.lag))
	}
	return ps.events
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
// by the pid alone.
func (h *Host) alive(pid uint32, start uint64) bool {
	s, ok, err := procStart(int(pid))
	if err != nil {
		return true // cannot tell: never reclaim a slot that may be in use
	}
	return ok && (start == 0 || s == start)
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
		delta := int64(min(d-hs.dropped, math.MaxInt64/2))
		h.self.dropped.Add(delta)
		if hs.droppedC == nil {
			if m, err := h.reg.GetOrCreate(registry.KindCounter, h.droppedName(hs.pid)); err == nil {
				hs.droppedC = m.(*registry.Counter)
			}
		}
		if hs.droppedC != nil {
			hs.droppedC.Add(delta)
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
	ring := h.g.slotOff(i) + h.g.ringOffset
	mask := uint64(h.g.ringRecs - 1)
	for left := h.g.ringRecs; left > 0; {
		c := hs.consumer
		end, more, events := c, true, 0
		for k := min(left, releaseEvery); k > 0; k-- {
			p := u64(h.m, ring+int(end&mask)*wire.RecordSize)
			w0 := atomic.LoadUint64(p)
			if wire.WordKind(w0) == 0 { // not committed yet
				if !skipHoles || end >= reserve {
					more = false
					break
				}
				ps.aborted++
				end++
				continue
			}
			v := atomic.LoadUint64((*uint64)(unsafeAdd(p, wire.RecordValueOff)))
			end++
			if id := wire.WordID(w0); id < uint32(len(hs.defs)) {
				if d := &hs.defs[id]; d.w0 == w0 {
					// gather's common cases, inline: a call per record
					// cost 10-20% of a drain. events is counted here, not
					// in *ps, which parallel drains keep side by side.
					events++
					switch {
					case !d.queued:
						hs.gather(d, id, v)
					case d.summed:
						d.sum += int64(v)
					case d.nvals < flushValues-1:
						d.vals[d.nvals] = v
						d.nvals++
					default:
						hs.gather(d, id, v)
					}
					continue
				}
			}
			h.apply(i, hs, w0, v, ps)
		}
		ps.events += events
		if end == c {
			return
		}
		hs.flushPending()
		if testHookBeforeRelease != nil {
			testHookBeforeRelease(i, end-c)
		}
		h.release(i, c, end)
		hs.consumer = end
		left -= int(end - c)
		if !more {
			return
		}
	}
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

// apply decodes one committed record and applies it to the registry, or
// queues it on its definition for flushPending.
func (h *Host) apply(i int, hs *hslot, w0, v uint64, ps *passStats) {
	rec, err := wire.DecodeWords(w0, v)
	if err != nil {
		ps.malformed++
		return
	}
	if int(rec.ID) >= len(hs.defs) {
		h.loadDefs(i, hs)
		if int(rec.ID) >= len(hs.defs) {
			ps.malformed++
			return
		}
	}
	d := &hs.defs[rec.ID]
	if d.kind != rec.Kind {
		ps.malformed++
		return
	}
	if d.rejected {
		ps.discarded++
		return
	}
	if rec.Kind == wire.KindGauge {
		f := rec.Float()
		if f-f != 0 { // NaN or ±Inf would poison the combined value
			ps.discarded++
			return
		}
		d.g.set(i, f)
		ps.events++
		return
	}
	ps.events++
	hs.gather(d, rec.ID, rec.Value)
}

// gather queues the value of a valid record of d (a counter, meter, timer
// or histogram; id is its index) for flushPending. drainSlot does the
// common cases itself, inline.
func (hs *hslot) gather(d *hdef, id uint32, v uint64) {
	if !d.queued {
		d.queued = true
		hs.pending = append(hs.pending, id)
	}
	if d.summed {
		d.sum += int64(v)
		return
	}
	if d.vals == nil {
		d.vals = new([flushValues]uint64)
	}
	d.vals[d.nvals] = v
	if d.nvals++; d.nvals == flushValues {
		d.applyValues()
	}
}

// applyValues applies a timer's or histogram's gathered values. The
// records carry a timer's nanoseconds as int64 and a histogram's value as
// float64 bits, so the buffer is read as either without copying.
func (d *hdef) applyValues() {
	if d.nvals == 0 {
		return
	}
	switch vs := d.vals[:d.nvals]; d.kind {
	case wire.KindTimer:
		d.t.UpdateMany(wire.Durations(vs))
	case wire.KindHistogram:
		d.h.UpdateMany(wire.Floats(vs))
	}
	d.nvals = 0
}

// flushValues is how many timer or histogram values a definition gathers
// before they are applied. It bounds the host's memory per definition (512
// B; 32 MiB if every definition of a default file, 64 slots of 1024, were
// a busy timer), and UpdateMany's per-call cost spread over 64 values is
// already under 0.1 ns each.
const flushValues = 64

// flushPending applies what the chunk queued (drainSlot's fast path and
// gather) and empties the queue.
func (hs *hslot) flushPending() {
	for _, id := range hs.pending {
		d := &hs.defs[id]
		switch d.kind {
		case wire.KindCounter:
			d.c.Add(d.sum)
		case wire.KindMeter:
			d.m.Mark(d.sum)
		default:
			d.applyValues()
		}
		d.queued, d.sum = false, 0
	}
	hs.pending = hs.pending[:0]
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
		d := h.bindDef(i, hs, e)
		if d.rejected {
			h.self.rejected.Inc()
		} else if d.kind != wire.KindGauge {
			d.w0 = wire.Word0(uint32(id), d.kind)
			d.summed = d.kind == wire.KindCounter || d.kind == wire.KindMeter
		}
		hs.defs = append(hs.defs, d)
	}
}

func (h *Host) bindDef(i int, hs *hslot, e []byte) hdef {
	k, mode, nl := wire.Kind(e[defKind]), GaugeMode(e[defMode]), int(e[defNameLen])
	d := hdef{kind: k, rejected: true}
	if !k.Valid() || e[defZero] != 0 || nl == 0 || (k == wire.KindGauge) != mode.Valid() || (k != wire.KindGauge && mode != 0) {
		return d
	}
	name := string(e[defName : defName+nl])
	d.name = name
	if wire.ValidateName(name) != nil || name == h.prefix || len(name) > len(h.prefix) && name[:len(h.prefix)+1] == h.prefix+"." {
		return d // workers may not write into the host's own metrics
	}
	if k == wire.KindGauge {
		h.aggMu.Lock()
		defer h.aggMu.Unlock()
		a := h.aggs[name]
		if a == nil {
			a = &gaugeAgg{mode: mode, vals: map[int]gval{}}
			if mode != GaugePerWorker {
				g, err := h.reg.GaugeFunc(name, nil)
				if err != nil {
					return d
				}
				a.g = g
			}
			h.aggs[name] = a
		} else if a.mode != mode {
			return d
		}
		if mode == GaugePerWorker {
			g, err := h.reg.GaugeFunc(perWorkerName(name, hs.pid), nil)
			if err != nil {
				return d
			}
			a.join(i, g)
		}
		d.g, d.rejected = a, false
		if atomic.LoadUint32((*uint32)(unsafeAdd(&e[defGaugeSet], 0))) != 0 {
			f := math.Float64frombits(atomic.LoadUint64((*uint64)(unsafeAdd(&e[defGaugeVal], 0))))
			if f-f == 0 {
				a.set(i, f)
			}
		}
		return d
	}
	m, err := h.reg.GetOrCreate(k, name)
	if err != nil {
		return d
	}
	switch k {
	case wire.KindCounter:
		d.c = m.(*registry.Counter)
	case wire.KindMeter:
		d.m = m.(*registry.Meter)
	case wire.KindTimer:
		d.t = m.(*registry.Timer)
	case wire.KindHistogram:
		d.h = m.(*registry.Histogram)
	}
	d.rejected = false
	return d
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
	}
	if hs.droppedC != nil {
		h.reg.Unregister(h.droppedName(hs.pid))
	}
	*hs = hslot{}
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
	for _, off := range []int{slotStart, slotReserve, slotDropped, slotDefCount, slotConsumer, slotTaking} {
		atomic.StoreUint64(h.slotU64(i, off), 0)
	}
	atomic.StoreUint64(st, packState(0, gen, StateFree))
}
