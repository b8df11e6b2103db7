package host

import (
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"

	mmap "github.com/edsrzf/mmap-go"

	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/internal/layout"
	"github.com/tapes-go/tapes/shm/internal/sys"
)

// Client is a test's worker: a real client (package shm), plus its slot's
// words as a mapping of the test's own shows them, so that a test can play
// a worker that scribbles on its slot or does half of what the client does
// (claim a record and ring without committing it). The client's own fields
// are shm's; these point at the same bytes of the same file.
type Client struct {
	*shm.Client
	m        mmap.MMap
	g        geometry
	base     int
	pid, gen uint32
	bell     *uint64 // the doorbell word holding the slot's bit
	bit      uint64
	wait     *uint32
	reserve  *uint64
	consumer *uint64
	dropped  *uint64
	defCount *uint64
	ring     unsafe.Pointer
	mask     uint64
}

// Open opens a worker client of the file at path, as shm.Open does, and
// maps the file for the test.
func Open(path string, opts ...shm.Option) (*Client, error) {
	sc, err := shm.Open(path, opts...)
	if err != nil {
		return nil, err
	}
	f, fi, err := sys.OpenFile(path, os.O_RDWR)
	if err != nil {
		sc.Close()
		return nil, err
	}
	defer f.Close()
	hdr := make([]byte, layout.HeaderSize)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		sc.Close()
		return nil, err
	}
	g, err := layout.ValidateHeader(hdr, fi.Size)
	if err != nil {
		sc.Close()
		return nil, err
	}
	m, err := mapFile(f, g.FileSize, true)
	if err != nil {
		sc.Close()
		return nil, err
	}
	runtime.AddCleanup(sc, func(m mmap.MMap) { m.Unmap() }, m)
	i := sc.Slot()
	c := &Client{Client: sc, m: m, g: g, base: g.SlotOff(i), pid: uint32(os.Getpid())}
	_, c.gen, _ = unpackState(atomic.LoadUint64(u64(m, c.base+slotState)))
	c.bell, c.bit = u64(m, hdrBell+i/64*8), 1<<(i%64)
	c.wait = u32(m, hdrWait)
	c.reserve = u64(m, c.base+slotReserve)
	c.consumer = u64(m, c.base+slotConsumer)
	c.dropped = u64(m, c.base+slotDropped)
	c.defCount = u64(m, c.base+slotDefCount)
	c.ring = unsafe.Pointer(&m[c.base+g.RingOffset])
	c.mask = uint64(g.RingRecs - 1)
	return c, nil
}

// OpenEnv is shm.OpenEnv for the test's Client.
func OpenEnv(opts ...shm.Option) (*Client, error) { return Open(os.Getenv(shm.EnvVar), opts...) }

func (c *Client) rung() bool { return atomic.LoadUint64(c.bell)&c.bit != 0 }

// ringBell rings the slot's doorbell as the client does (docs/shm-layout.md,
// "The doorbell"): the bit, then the host's wake-up if it sleeps.
func (c *Client) ringBell() {
	atomic.OrUint64(c.bell, c.bit)
	if atomic.LoadUint32(c.wait) != 0 && atomic.CompareAndSwapUint32(c.wait, 1, 0) {
		futexWakeAll(c.wait)
	}
}

// commit writes a record's value, then its first word, as the client's
// commit does (with stores at least as strong).
func commit(p unsafe.Pointer, w0, v uint64) {
	atomic.StoreUint64((*uint64)(unsafe.Add(p, 8)), v)
	atomic.StoreUint64((*uint64)(p), w0)
}
