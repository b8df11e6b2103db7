package shm

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	mmap "github.com/edsrzf/mmap-go"

	"github.com/tapes-go/tapes/shm/internal/sys"
	"github.com/tapes-go/tapes/wire"
)

// Client records metrics from a worker process into its own slot of a shm
// file; a host process drains the slot into its registry. It implements
// tapes.Recorder, so code written against the root package's handle
// interfaces runs unchanged in a worker.
//
//	c, err := shm.OpenEnv() // path from $TAPES_SHM
//	defer c.Close()
//	c.Counter("jobs.done").Inc()
//	defer c.Timer("jobs.latency").Time().Stop()
//
// Recording never blocks and never allocates: an event claims the next
// record of the slot's ring with one compare-and-swap and commits it with one
// atomic store. When the ring is full (the host is behind or not running)
// the event is dropped and counted in the slot's dropped counter, which the
// host reports as <prefix>.dropped.*.
//
// All methods are safe for concurrent use by the goroutines of one process.
// A forked child must Open its own Client: the slot belongs to the pid that
// claimed it.
type Client struct {
	// The record path reads these; they never change after Open.
	reserve  *uint64 // slot's claim index, in the mapping
	consumer *uint64 // host's consumer index, in the mapping
	dropped  *uint64
	wait     *uint32 // header's hostWait word
	bell     *uint64 // the header's doorbell word that holds this slot's bit
	bit      uint64  // this slot's bit in *bell
	ring     unsafe.Pointer
	mask     uint64
	size     uint64

	_      [64]byte
	limit  atomic.Uint64 // claims below this fit in the ring (consumer + size at last look)
	closed atomic.Bool

	mu       sync.Mutex
	f        *os.File
	m        mmap.MMap
	g        geometry
	slot     int
	base     int
	pid      uint32
	gen      uint32
	defCount *uint64
	names    *wire.Names // the name rule and the host registry's kind and path checks, at the worker
	defs     map[string]def
	modes    map[string]GaugeMode // declared by GaugeMode before definition
	handles  map[string]any
	funcs    []*Gauge
	every    time.Duration
	slotWait time.Duration
	stop     chan struct{}
	done     chan struct{}
}

type def struct {
	id   uint32
	kind wire.Kind
	mode GaugeMode
}

// Option configures a Client.
type Option func(*Client)

// WithSampleInterval sets how often one background goroutine calls the
// functions of function gauges and records their values (default 1s). Flush
// and Close also sample.
func WithSampleInterval(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.every = d
		}
	}
}

// ErrBigEndian is returned by Open on a big-endian machine: records are
// written with native stores and the file format is little-endian.
var ErrBigEndian = errors.New("shm: big-endian machines are not supported")

func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// OpenEnv opens the file named by the TAPES_SHM environment variable.
func OpenEnv(opts ...Option) (*Client, error) {
	p := os.Getenv(EnvVar)
	if p == "" {
		return nil, fmt.Errorf("shm: %s is not set", EnvVar)
	}
	return Open(p, opts...)
}

// DefaultSlotWait is how long Open waits for a free slot when every slot
// is taken (see WithSlotWait).
const DefaultSlotWait = time.Second

// WithSlotWait sets how long Open waits for a slot to become free when every
// slot is taken (default DefaultSlotWait; 0 or less: do not wait). While it
// waits it asks the host to look for dead and closed workers at once, so
// short-lived workers do not have to wait for the host's liveness interval.
// Open then fails with ErrNoSlot, and the refusal is counted in the file
// (the host reports <prefix>.refused).
func WithSlotWait(d time.Duration) Option {
	return func(c *Client) { c.slotWait = max(d, 0) }
}

// Open attaches to the shm file at path, which a host created, and claims a
// free worker slot for this process. When every slot is taken it waits for
// one (WithSlotWait), then fails with ErrNoSlot. Open refuses a file that
// other users may read or write (ErrBadPerm).
func Open(path string, opts ...Option) (*Client, error) {
	if !littleEndian() {
		return nil, ErrBigEndian
	}
	start, err := sys.SelfStart()
	if err != nil {
		return nil, err
	}
	f, fi, err := sys.OpenFile(path, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	if fi.Perm&0o077 != 0 {
		f.Close()
		return nil, errOpenPerm(path, fi.Perm)
	}
	hdr := make([]byte, HeaderSize)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s: reading header: %v", ErrTruncated, path, err)
	}
	g, err := validateHeader(hdr, fi.Size)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	m, err := sys.MapFile(f, g.FileSize, true)
	if err != nil {
		f.Close()
		return nil, err
	}
	c := &Client{
		f: f, m: m, g: g,
		names:    wire.NewNames(g.MaxDefs),
		defs:     map[string]def{},
		modes:    map[string]GaugeMode{},
		handles:  map[string]any{},
		every:    time.Second,
		slotWait: DefaultSlotWait,
		pid:      uint32(os.Getpid()),
	}
	for _, o := range opts {
		o(c)
	}
	c.wait = u32(m, hdrWait)
	if err := faultErr(func() error { return c.claim(path, start) }); err != nil {
		m.Unmap()
		f.Close()
		return nil, err
	}
	c.reserve = u64(m, c.base+slotReserve)
	c.consumer = u64(m, c.base+slotConsumer)
	c.dropped = u64(m, c.base+slotDropped)
	c.defCount = u64(m, c.base+slotDefCount)
	c.ring = unsafe.Pointer(&m[c.base+g.RingOffset])
	c.size = uint64(g.RingRecs)
	c.mask = c.size - 1
	c.limit.Store(c.size) // claim scrubbed the indices: consumer is 0
	// The host visits only slots whose doorbell rang: it binds this one
	// now (mapping the ring, reading definitions), not when the first
	// event arrives or at its next liveness check.
	c.ringBell()
	// Handles keep the client reachable, so the mapping is released only
	// when no goroutine can still record into it (see Close). A cleanup,
	// not a finalizer: the client and its handles point at each other,
	// and a finalizer on an object in a cycle never runs, so every
	// Open/Close kept its mapping, and the ring pages it populated, for
	// the life of the process.
	runtime.AddCleanup(c, func(m mmap.MMap) { m.Unmap() }, m)
	return c, nil
}

// claim takes a free slot: CAS FREE -> CLAIMING (the host leaves a
// CLAIMING slot alone while its process lives), scrub every field and the
// ring, then CAS CLAIMING -> ACTIVE. A FREE slot should be all zero, but
// anyone who can write the file can scribble on it; scrubbing here, where
// the slot is nobody else's, means a new worker never inherits indices or
// records that would misalign its ring with the host's view.
func (c *Client) claim(path string, start uint64) error {
	m, g := c.m, c.g
	deadline := time.Now().Add(c.slotWait)
	pause := 500 * time.Microsecond
	for c.slot = -1; c.slot < 0; {
		for i := 0; i < g.Slots; i++ {
			st := u64(m, g.SlotOff(i)+slotState)
			w := atomic.LoadUint64(st)
			_, gen, state := unpackState(w)
			if state != StateFree {
				continue
			}
			if atomic.CompareAndSwapUint64(st, w, packState(c.pid, gen+1, StateClaiming)) {
				c.slot, c.gen = i, (gen+1)&0xffffff
				break
			}
		}
		if c.slot >= 0 {
			break
		}
		// Ask the host to reclaim now (it checks claimWaits on every pass
		// and before it sleeps; the add is a full barrier, as in put).
		atomic.AddUint64(u64(m, hdrClaimWaits), 1)
		if atomic.LoadUint32(c.wait) != 0 {
			c.wakeHost()
		}
		if !time.Now().Before(deadline) {
			atomic.AddUint64(u64(m, hdrRefused), 1)
			return fmt.Errorf("%w in %s (%d slots, waited %v)", ErrNoSlot, path, g.Slots, c.slotWait)
		}
		time.Sleep(min(pause, time.Until(deadline)))
		pause = min(2*pause, 20*time.Millisecond)
	}
	c.base = g.SlotOff(c.slot)
	// Everything between the state word and the definition table: start
	// time, indices, counters, the host's indices and the reserved bytes.
	// The host reads none of it while the slot is CLAIMING.
	clear(m[c.base+slotStart : c.base+slotDefs])
	atomic.StoreUint64(u64(m, c.base+slotStart), start)
	// Definition entries are written whole before defCount covers them;
	// the ring must read as all uncommitted.
	ring := c.base + g.RingOffset
	sys.Populate(m, ring, ring+g.RingRecs*wire.RecordSize)
	clear(m[ring : ring+g.RingRecs*wire.RecordSize])
	st := u64(m, c.base+slotState)
	if !atomic.CompareAndSwapUint64(st, packState(c.pid, c.gen, StateClaiming), packState(c.pid, c.gen, StateActive)) {
		return fmt.Errorf("shm: slot %d of %s was taken while this worker claimed it (state %#x)", c.slot, path, atomic.LoadUint64(st))
	}
	c.bell = u64(m, hdrBell+c.slot/64*8)
	c.bit = 1 << (c.slot % 64)
	return nil
}

// put claims the next record of the ring and commits it. w0 is the record's
// first 8 bytes (id, kind, zero reserved bytes) as a little-endian word; the
// host treats a record as committed once that word's kind byte is non-zero,
// so w0 is stored last, atomically, after the value.
func (c *Client) put(w0, v uint64) {
	r := atomic.LoadUint64(c.reserve)
	if r < c.limit.Load() && !c.closed.Load() && atomic.CompareAndSwapUint64(c.reserve, r, r+1) {
		// The CAS is a full barrier, so this load cannot miss a host pass
		// that cleared the bit, nor a host that announced its sleep
		// (docs/shm-layout.md, "The doorbell"). A bit already set means the
		// host has yet to take it, and will read reserve after it does.
		if atomic.LoadUint64(c.bell)&c.bit == 0 {
			c.ringRecord(r, w0, v)
			return
		}
		commit(unsafe.Add(c.ring, (r&c.mask)*wire.RecordSize), w0, v)
		return
	}
	c.putSlow(w0, v)
}

// ringRecord rings the doorbell for record r and commits it. The wake-up,
// if the host sleeps, comes after the commit: a host woken before it would
// find the record claimed but not committed and have to look again.
// Whether to wake is still decided right after the OR, which is what the
// handshake needs.
func (c *Client) ringRecord(r, w0, v uint64) {
	atomic.OrUint64(c.bell, c.bit)
	wake := atomic.LoadUint32(c.wait) != 0
	commit(unsafe.Add(c.ring, (r&c.mask)*wire.RecordSize), w0, v)
	if wake {
		c.wakeHost()
	}
}

// putSlow is put when the ring looked full, the claim raced with another
// goroutine, or the client is closed.
func (c *Client) putSlow(w0, v uint64) {
	for {
		if c.closed.Load() {
			return
		}
		r := atomic.LoadUint64(c.reserve)
		if r >= c.limit.Load() {
			lim := atomic.LoadUint64(c.consumer) + c.size
			c.limit.Store(lim)
			if r >= lim {
				atomic.AddUint64(c.dropped, 1)
				return
			}
		}
		if atomic.CompareAndSwapUint64(c.reserve, r, r+1) {
			if atomic.LoadUint64(c.bell)&c.bit == 0 {
				c.ringRecord(r, w0, v)
				return
			}
			commit(unsafe.Add(c.ring, (r&c.mask)*wire.RecordSize), w0, v)
			return
		}
	}
}

// ringBell sets this slot's doorbell bit, so that the host's next pass
// visits the slot, and wakes the host if it sleeps. The OR is a full
// barrier between the bit and the load of hostWait, which the host stores
// before it re-reads the doorbell: either it sees the bit, or this load
// sees it asleep.
func (c *Client) ringBell() {
	atomic.OrUint64(c.bell, c.bit)
	if atomic.LoadUint32(c.wait) != 0 {
		c.wakeHost()
	}
}

// wakeHost wakes a host sleeping in futex wait; of the workers that see
// the flag, the one whose CAS clears it makes the system call.
func (c *Client) wakeHost() {
	if atomic.CompareAndSwapUint32(c.wait, 1, 0) {
		sys.FutexWakeAll(c.wait)
	}
}

// Slot returns the index of the slot this client claimed.
func (c *Client) Slot() int { return c.slot }

// Dropped returns how many events this client's slot dropped because its
// ring was full.
func (c *Client) Dropped() uint64 { return atomic.LoadUint64(c.dropped) }

func (c *Client) sampler(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c.sample()
		}
	}
}

func (c *Client) sample() {
	c.mu.Lock()
	fs := c.funcs
	c.mu.Unlock()
	for _, g := range fs {
		g.record(g.fn())
	}
}

// Flush samples every function gauge now. Other events need no flushing:
// each is visible to the host as soon as its record is committed.
func (c *Client) Flush() {
	if !c.closed.Load() {
		c.sample()
	}
}

// Close samples the function gauges a last time, stops the sampler and
// marks the slot closed. It does not wait for the host: committed events
// stay in the ring, and the host drains them and then frees the slot
// (within a second if any record is still half-written, by a goroutine
// that was recording during Close). Events recorded after Close are
// discarded. The mapping itself stays until the Client is garbage, so a
// goroutine still holding a handle can never fault.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return nil
	}
	stop, done := c.stop, c.done
	c.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	c.sample()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed.Store(true)
	defer c.f.Close()
	return faultErr(func() error {
		st := u64(c.m, c.base+slotState)
		want := packState(c.pid, c.gen, StateActive)
		if !atomic.CompareAndSwapUint64(st, want, packState(c.pid, c.gen, StateClosed)) {
			return fmt.Errorf("shm: slot %d was taken from this worker (state %#x)", c.slot, atomic.LoadUint64(st))
		}
		c.ringBell() // the host drains and frees the slot now
		return nil
	})
}

// faultErr runs f, turning a fault on the mapping (the file was truncated)
// into an error. The record path cannot afford this protection; a worker
// whose file is truncated under it dies of SIGBUS when it next records,
// like any program using a shared mapping, which is one reason the file is
// private to its user.
func faultErr(f func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			if _, ok := p.(interface{ Addr() uintptr }); !ok {
				panic(p)
			}
			err = fmt.Errorf("%w: %v", ErrTruncated, p)
		}
	}()
	return f()
}
