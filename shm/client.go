package shm

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	mmap "github.com/edsrzf/mmap-go"

	"github.com/tapes-go/tapes"
	"github.com/tapes-go/tapes/registry"
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
	start, err := selfStart()
	if err != nil {
		return nil, err
	}
	f, fi, err := openFile(path, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	if fi.perm&0o077 != 0 {
		f.Close()
		return nil, errOpenPerm(path, fi.perm)
	}
	hdr := make([]byte, HeaderSize)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s: reading header: %v", ErrTruncated, path, err)
	}
	g, err := validateHeader(hdr, fi.size)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	m, err := mapFile(f, g.fileSize, true)
	if err != nil {
		f.Close()
		return nil, err
	}
	c := &Client{
		f: f, m: m, g: g,
		names:    wire.NewNames(g.maxDefs),
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
	c.ring = unsafe.Pointer(&m[c.base+g.ringOffset])
	c.size = uint64(g.ringRecs)
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
		for i := 0; i < g.slots; i++ {
			st := u64(m, g.slotOff(i)+slotState)
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
			return fmt.Errorf("%w in %s (%d slots, waited %v)", ErrNoSlot, path, g.slots, c.slotWait)
		}
		time.Sleep(min(pause, time.Until(deadline)))
		pause = min(2*pause, 20*time.Millisecond)
	}
	c.base = g.slotOff(c.slot)
	// Everything between the state word and the definition table: start
	// time, indices, counters, the host's indices and the reserved bytes.
	// The host reads none of it while the slot is CLAIMING.
	clear(m[c.base+slotStart : c.base+slotDefs])
	atomic.StoreUint64(u64(m, c.base+slotStart), start)
	// Definition entries are written whole before defCount covers them;
	// the ring must read as all uncommitted.
	ring := c.base + g.ringOffset
	populate(m, ring, ring+g.ringRecs*wire.RecordSize)
	clear(m[ring : ring+g.ringRecs*wire.RecordSize])
	st := u64(m, c.base+slotState)
	if !atomic.CompareAndSwapUint64(st, packState(c.pid, c.gen, StateClaiming), packState(c.pid, c.gen, StateActive)) {
		return fmt.Errorf("shm: slot %d of %s was taken while this worker claimed it (state %#x)", c.slot, path, atomic.LoadUint64(st))
	}
	c.bell = u64(m, hdrBell+c.slot/64*8)
	c.bit = 1 << (c.slot % 64)
	return nil
}

func u64(m []byte, off int) *uint64 { return (*uint64)(unsafe.Pointer(&m[off])) }
func u32(m []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&m[off])) }

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
		futexWakeAll(c.wait)
	}
}

// Slot returns the index of the slot this client claimed.
func (c *Client) Slot() int { return c.slot }

// Dropped returns how many events this client's slot dropped because its
// ring was full.
func (c *Client) Dropped() uint64 { return atomic.LoadUint64(c.dropped) }

// ReservedPrefix is the namespace of the host's own metrics: a worker may
// not define a name equal to it or under it ("tapes.host.shm.dropped" would
// otherwise add into the host's counter). The host refuses and counts such
// definitions too (<prefix>.rejected), whichever client wrote them.
const ReservedPrefix = "tapes"

// ErrReservedName: a worker defined a name under ReservedPrefix.
var ErrReservedName = errors.New("shm: names under \"tapes.\" are reserved for the host's own metrics")

func reservedName(name string) bool {
	return wire.Under(name, ReservedPrefix)
}

// ErrModeConflict: a gauge is defined again with another combine mode.
var ErrModeConflict = errors.New("shm: gauge already defined with another mode")

// Define publishes a metric definition in this worker's table and returns
// its id, the index records carry. It is the error-returning form behind
// every handle method; errors are *wire.NameError values (the registry's)
// (invalid name, kind conflict, prefix conflict, too many metrics: the
// table holds Config.MaxMetrics names per worker), ErrModeConflict or
// ErrClosed. Defining a name again returns the same id.
func (c *Client) Define(k wire.Kind, name string) (uint32, error) {
	return c.define(k, name, 0)
}

func (c *Client) define(k wire.Kind, name string, mode GaugeMode) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.defineLocked(k, name, mode)
}

func (c *Client) defineLocked(k wire.Kind, name string, mode GaugeMode) (uint32, error) {
	if c.closed.Load() {
		return 0, ErrClosed
	}
	if k == wire.KindGauge && mode == 0 {
		mode = c.modes[name]
		if mode == 0 {
			mode = DefaultGaugeMode
		}
	}
	if d, ok := c.defs[name]; ok {
		if d.kind != k {
			return 0, &wire.NameError{Name: name, Kind: k, Existing: d.kind, Err: wire.ErrKindConflict}
		}
		if k == wire.KindGauge && d.mode != mode {
			return 0, fmt.Errorf("%w: %q is %v, asked for %v", ErrModeConflict, name, d.mode, mode)
		}
		return d.id, nil
	}
	if k == wire.KindGauge && !mode.Valid() {
		return 0, fmt.Errorf("shm: gauge %q: invalid mode %d", name, mode)
	}
	if reservedName(name) {
		return 0, fmt.Errorf("%w: %q", ErrReservedName, name)
	}
	// The same table the host's registry keeps: a worker is refused exactly
	// what the host would refuse, before anything is written.
	if _, err := c.names.Add(k, name); err != nil {
		return 0, err
	}
	id := uint32(len(c.defs))
	e := c.m[c.base+c.g.defOffset+int(id)*DefSize:][:DefSize]
	clear(e)
	e[defKind] = byte(k)
	if k == wire.KindGauge {
		e[defMode] = byte(mode)
	}
	e[defNameLen] = byte(len(name))
	copy(e[defName:], name)
	// Publishing the count is the release: the host reads entries only
	// below the count it loaded. The doorbell makes the host read them
	// now, so that the metric appears in its registry before any event.
	atomic.StoreUint64(c.defCount, uint64(id)+1)
	c.ringBell()
	c.defs[name] = def{id: id, kind: k, mode: mode}
	return id, nil
}

// GaugeMode declares the combine mode of the gauge called name before it is
// defined, so that library code calling Gauge(name, fn) through a
// tapes.Recorder gets it. Declaring another mode for an already defined
// gauge returns ErrModeConflict.
func (c *Client) GaugeMode(name string, mode GaugeMode) error {
	if !mode.Valid() {
		return fmt.Errorf("shm: gauge %q: invalid mode %d", name, mode)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.defs[name]; ok && d.kind == wire.KindGauge && d.mode != mode {
		return fmt.Errorf("%w: %q is %v, asked for %v", ErrModeConflict, name, d.mode, mode)
	}
	c.modes[name] = mode
	return nil
}

func handle[T any](c *Client, k wire.Kind, name string, mk func(id uint32) *T) (*T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.handles[name].(*T); ok {
		return h, nil
	}
	id, err := c.defineLocked(k, name, 0)
	if err != nil {
		return nil, err
	}
	h := mk(id)
	c.handles[name] = h
	return h, nil
}

func must[T any](h *T, err error) *T {
	if err != nil {
		panic(err)
	}
	return h
}

// GetCounter is the error-returning form of Counter.
func (c *Client) GetCounter(name string) (*Counter, error) {
	return handle(c, wire.KindCounter, name, func(id uint32) *Counter {
		return &Counter{c: c, w0: wire.Word0(id, wire.KindCounter)}
	})
}

// GetMeter is the error-returning form of Meter.
func (c *Client) GetMeter(name string) (*Meter, error) {
	return handle(c, wire.KindMeter, name, func(id uint32) *Meter {
		return &Meter{c: c, w0: wire.Word0(id, wire.KindMeter)}
	})
}

// GetTimer is the error-returning form of Timer.
func (c *Client) GetTimer(name string) (*Timer, error) {
	return handle(c, wire.KindTimer, name, func(id uint32) *Timer {
		return &Timer{c: c, w0: wire.Word0(id, wire.KindTimer)}
	})
}

// GetHistogram is the error-returning form of Histogram.
func (c *Client) GetHistogram(name string) (*Histogram, error) {
	return handle(c, wire.KindHistogram, name, func(id uint32) *Histogram {
		return &Histogram{c: c, w0: wire.Word0(id, wire.KindHistogram)}
	})
}

// GetGauge is the error-returning form of Gauge with an explicit mode (0
// means the mode declared with GaugeMode, else DefaultGaugeMode). A non-nil
// fn is sampled by the client's background loop, on Flush and on Close; the
// first fn given for a name stays.
func (c *Client) GetGauge(name string, mode GaugeMode, fn func() float64) (*Gauge, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.handles[name].(*Gauge); ok {
		if mode != 0 && mode != c.defs[name].mode {
			return nil, fmt.Errorf("%w: %q is %v, asked for %v", ErrModeConflict, name, c.defs[name].mode, mode)
		}
		return h, nil
	}
	id, err := c.defineLocked(wire.KindGauge, name, mode)
	if err != nil {
		return nil, err
	}
	e := c.base + c.g.defOffset + int(id)*DefSize
	h := &Gauge{c: c, w0: wire.Word0(id, wire.KindGauge), set: u32(c.m, e+defGaugeSet), val: u64(c.m, e+defGaugeVal), fn: fn}
	c.handles[name] = h
	if fn != nil {
		c.funcs = append(c.funcs, h)
		if c.stop == nil {
			c.stop, c.done = make(chan struct{}), make(chan struct{})
			go c.sampler(c.stop, c.done)
		}
		h.record(fn())
	}
	return h, nil
}

// Counter returns a handle to the counter called name, defining it if
// needed. It panics on an invalid name or a kind conflict, as the
// registry's accessors do; use GetCounter for names from elsewhere.
func (c *Client) Counter(name string) tapes.CounterHandle { return must(c.GetCounter(name)) }

// Meter returns a handle to the meter called name; it panics like Counter.
func (c *Client) Meter(name string) tapes.MeterHandle { return must(c.GetMeter(name)) }

// Timer returns a handle to the timer called name; it panics like Counter.
func (c *Client) Timer(name string) tapes.TimerHandle { return must(c.GetTimer(name)) }

// Histogram returns a handle to the histogram called name; it panics like Counter.
func (c *Client) Histogram(name string) tapes.HistogramHandle {
	return must(c.GetHistogram(name))
}

// Gauge returns a handle to the gauge called name with the mode declared by
// GaugeMode, else DefaultGaugeMode (sum). A non-nil fn makes it a function
// gauge, sampled in the background (see WithSampleInterval). It panics like
// Counter.
func (c *Client) Gauge(name string, fn func() float64) tapes.GaugeHandle {
	return must(c.GetGauge(name, 0, fn))
}

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

// Counter is a worker's handle to a counter. Methods cost one ring record.
type Counter struct {
	c  *Client
	w0 uint64
}

// Inc adds 1.
func (h *Counter) Inc() { h.c.put(h.w0, 1) }

// Dec subtracts 1.
func (h *Counter) Dec() { h.c.put(h.w0, math.MaxUint64) }

// Add adds n, which may be negative.
func (h *Counter) Add(n int64) { h.c.put(h.w0, uint64(n)) }

// Meter is a worker's handle to a meter.
type Meter struct {
	c  *Client
	w0 uint64
}

// Mark records n events.
func (h *Meter) Mark(n int64) { h.c.put(h.w0, uint64(n)) }

// Histogram is a worker's handle to a histogram.
type Histogram struct {
	c  *Client
	w0 uint64
}

// Update records v.
func (h *Histogram) Update(v float64) { h.c.put(h.w0, math.Float64bits(v)) }

// Timer is a worker's handle to a timer.
type Timer struct {
	c  *Client
	w0 uint64
}

// Update records one duration. A negative one is dropped here, since the
// host's registry.Timer would ignore it anyway, and spends no ring slot.
func (h *Timer) Update(d time.Duration) {
	if d >= 0 {
		h.c.put(h.w0, uint64(d))
	}
}

// UpdateSince records the time elapsed since start.
func (h *Timer) UpdateSince(start time.Time) { h.Update(time.Since(start)) }

// Time starts a stopwatch whose Stop records the elapsed time.
func (h *Timer) Time() registry.Stopwatch { return registry.StartStopwatch(h) }

// Func runs f and records how long it took.
func (h *Timer) Func(f func()) {
	start := time.Now()
	defer h.UpdateSince(start)
	f()
}

// Gauge is a worker's handle to a cross-process gauge.
type Gauge struct {
	c   *Client
	w0  uint64
	set *uint32
	val *uint64
	fn  func() float64
}

// Set records v as this worker's value. On a function gauge it has no
// effect: the function wins, as in the registry.
func (h *Gauge) Set(v float64) {
	if h.fn == nil {
		h.record(v)
	}
}

// record keeps the value in the definition entry too, so that a host that
// starts later learns the current value even if the record is long drained.
func (h *Gauge) record(v float64) {
	if h.c.closed.Load() {
		return
	}
	b := math.Float64bits(v)
	atomic.StoreUint64(h.val, b)
	if atomic.LoadUint32(h.set) == 0 {
		atomic.StoreUint32(h.set, 1)
	}
	h.c.put(h.w0, b)
}

var _ tapes.Recorder = (*Client)(nil)

func unsafeAdd[T any](p *T, off uintptr) unsafe.Pointer { return unsafe.Add(unsafe.Pointer(p), off) }
