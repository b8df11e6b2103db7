package host

import (
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mmap "github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"

	"github.com/tapes-go/tapes/internal/apply"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm/internal/relayhook"
)

// Config is the geometry of a new file and the host's settings. Zero fields
// take the defaults. When Create attaches to an existing file, the
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

	// Registry receives what workers record and the host's own metrics
	// (under Prefix); nil: a new one (Host.Registry). It is the Host's for
	// its life, like every setting here: a running Host changes none.
	Registry *registry.Registry
	// MaxIdleSleep is the longest sleep between passes when no events
	// arrive (default 250ms). Workers wake a sleeping host through a
	// futex, so this bounds only how long a missed wake-up could delay an
	// event (on systems without futexes a sleep is capped at 1ms).
	MaxIdleSleep time.Duration
	// LivenessInterval is how often the host checks that the workers of
	// active slots are alive and refreshes dropped counts and lag (default
	// 250ms).
	LivenessInterval time.Duration
	// CoalesceWindow is how long a host woken back to back lets events
	// gather before its next pass (default 1.5ms, MinCoalesceWindow to
	// MaxCoalesceWindow): under a steady trickle from many workers an
	// event waits half a window on average, and the host wakes once per
	// window instead of once per event. Performance tip: the default keeps
	// the median latency under a millisecond (0.7-0.8 ms measured with 200
	// workers at 100 events/s each); 1ms takes it to ~0.2-0.5 ms for ~15%
	// more host CPU there, 3ms halves the wake-ups again for a median
	// near 1.5 ms. One worker's isolated events are drained at once
	// whatever the window (docs/RATIONALE.md, "Polling without burning a
	// core").
	CoalesceWindow time.Duration
}

// The bounds of Config.CoalesceWindow: below 100µs a window costs about
// what a wake-up per event does; beyond 100ms events wait longer than
// any reporter's resolution is worth, and a worker's ring must last it.
const (
	MinCoalesceWindow = 100 * time.Microsecond
	MaxCoalesceWindow = 100 * time.Millisecond
)

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
	if c.MaxIdleSleep <= 0 {
		c.MaxIdleSleep = 250 * time.Millisecond
	}
	if c.LivenessInterval <= 0 {
		c.LivenessInterval = 250 * time.Millisecond
	}
	if c.CoalesceWindow == 0 {
		c.CoalesceWindow = defaultCoalesce
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
	pathZ  []byte // path and a NUL, for checkFile's fstatat
	fd     int    // f's, taken once: File.Fd is not free
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
	lastFull  time.Time     // the last pass that read every slot's state
	fullCost  time.Duration // how long that pass took (see claimDue)
	claimed   bool          // the last pass looked for a slot a worker waits for
	visits    uint64        // slots the passes visited (tests)
	passCost  time.Duration // how long the last pass that drained nothing (or every slot) took
	idlePass  bool          // the last pass found nothing to do (see wait)
	idleRings int           // times in a row bells rang right after such a pass

	passes    atomic.Uint64 // completed drain passes (Passes)
	fullScans atomic.Uint64 // passes that read every slot's state

	reg   *registry.Registry
	self  selfMetrics
	slots []hslot
	todo  []slotWork // a pass's slots, kept to spare the allocation
	visit []int      // the slots a pass looks at (doorbell and pending), likewise kept
	// pend is the slots the last pass left with work the doorbell will not
	// announce again: a record claimed but not yet committed (the worker
	// rang before committing), or a closed slot waiting for one. Every
	// pass visits them, and the host does not sleep in the futex while
	// any is not stalled (pendLive).
	pend []int
	more bool // the last pass stopped in a slot at its budget (one ring's worth)
	// pendLive counts the slots of pend that are not stalled: what the
	// host looks again for at once; pendMoved, that the last pass found a
	// slot of pend with a new wait or claims past it (see addPend).
	pendLive  int
	pendMoved bool
	// busiest is the most records the last pass drained from one slot:
	// a worker writing that fast may fill its ring during a nap.
	busiest int
	bells   int // doorbell words that cover the file's slots
	// tracked has a bit per slot that is bound or being claimed: the slots
	// a liveness check visits, found in bells words instead of a walk of
	// every slot's record (4096 slots: 0.1-0.5 ms, four times a second).
	tracked []uint64
	// Bells of slots neither bound nor being claimed, which honest workers
	// never ring while the slot is FREE: rung (the bits one pass took),
	// and while suspectUntil is ahead, suspect, the ones put off to be
	// visited every suspectEvery (see pass).
	rung, suspect []uint64
	suspectUntil  time.Time
	suspectSeen   time.Time // the last visit of the suspects

	coalesce time.Duration // how long back-to-back wake-ups wait for each other (see Drain)
	// relay waits on hostWait for the host without a goroutine blocked in
	// futex(2): an io_uring read by the netpoller (package
	// shm/internal/uring), else the relay thread of package shm/relay;
	// nil before the first sleep, or when neither can start (noRelay is
	// then set; tests set it to take the plain futex path, and noRing to
	// take the relay). via names it, for the log and tests.
	relay   relayhook.Relay
	noRelay bool
	noRing  bool
	// guardUntil: until then the host sleeps at most guardSleep, since a
	// worker abused hostWait (see interfered).
	guardUntil  time.Time
	silentZeros int // sleeps in a row that ran to their end and found the word at 0
	silentRings int // sleeps in a row that ran to their end and found a bell rung
	via         string
	ticking     bool // the relay answers every tickEvery (see window)
	tickEvery   time.Duration
	touched     uint64        // what touch loaded
	stopping    bool          // Drain's context ended: wait returns at once
	active      int           // bound slots in state ACTIVE at their last visit: the workers gauge
	shown       int           // the workers gauge's value, -1 before the first pass
	pidfds      int           // open pidfds (hslot.pidfd)
	pidfdCap    int           // at most this many, to leave the process descriptors
	polls       []unix.PollFd // liveness check's pidfds, kept to spare the allocation

	// Wake-ups since wakesFrom whose next pass found nothing to drain, and
	// something (see wakeFound).
	wakesFrom             time.Time
	emptyWakes, fullWakes int

	// aggMu guards aggs: slots drained concurrently (drainSlots) may bind
	// gauge definitions at the same time.
	aggMu sync.Mutex
	aggs  map[string]*gaugeAgg
}

// hslot is what the host knows about one slot's current occupant.
type hslot struct {
	bound    bool
	pid      uint32
	gen      uint32
	consumer uint64
	// pendSince is the clock of the last visit that found the slot
	// waiting on a record (zero: it did not; see Host.addPend), beside
	// consumer, on the line every visit reads anyway.
	pendSince time.Time
	dropped   uint64
	droppedC  *registry.Counter
	defs      []hdef      // what the host bound each definition to, by id
	tab       apply.Table // the same ids as the applier's table
	gaugeBad  int         // NaN or ±Inf gauge values the applier was given (see slotGauge)
	badDefs   uint64      // last out-of-range definition count reported
	holeAt    time.Time
	active    bool // state ACTIVE at the last visit (counted in Host.active)
	marked    bool // in the visit list of the pass under way
	claiming  bool // CLAIMING at the last visit
	// pidfd is a descriptor of the worker's process plus one (0: none,
	// and liveness reads /proc at every check): it becomes readable when
	// the process exits, so a check of all workers is one poll(2).
	pidfd  int
	exited bool // its pidfd was readable at the last liveness check
	// The rest of a wait on a record (see Host.addPend): pendAt is the
	// consumer index the last visit found waiting, pendHigh the furthest
	// reserve seen meanwhile, and stallSum the time spent waiting on one
	// record without progress since stallFrom.
	pendAt    uint64
	pendHigh  uint64
	stallFrom time.Time
	stallSum  time.Duration
}

// boundTo reports whether the host has bound this slot to the worker the
// state word names (pid and generation): otherwise the next pass binds it.
func (hs *hslot) boundTo(pid, gen uint32) bool { return hs.bound && hs.pid == pid && hs.gen == gen }

// Path returns the file's path, for passing to workers (see shm.EnvVar).
func (h *Host) Path() string { return h.path }

// Slots returns the number of worker slots in the file.
func (h *Host) Slots() int { return h.g.Slots }

// RingRecords returns the number of records in each worker's ring.
func (h *Host) RingRecords() int { return h.g.RingRecs }

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

// Registry returns the registry the Host drains into (Config.Registry, or
// the one it made).
func (h *Host) Registry() *registry.Registry { return h.reg }
