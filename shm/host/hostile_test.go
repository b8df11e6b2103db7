package host

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/internal/layout"
	"github.com/tapes-go/tapes/shm/internal/sys"
	"github.com/tapes-go/tapes/wire"
)

// A hostile worker here is this test process writing into a slot it
// claimed with a real Client, through the Client's own mapping.

func validFile(t *testing.T) (string, []byte) {
	t.Helper()
	h := newHost(t, Config{Slots: 2, RingRecords: 16, MaxMetrics: 4})
	path := h.Path()
	h.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

func TestHostileHeaders(t *testing.T) {
	path, good := validFile(t)
	le := binary.LittleEndian
	cases := []struct {
		name string
		edit func([]byte) []byte
		want error
	}{
		{"empty", func(b []byte) []byte { return nil }, ErrTruncated},
		{"short", func(b []byte) []byte { return b[:layout.HeaderSize-1] }, ErrTruncated},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, ErrTruncated},
		{"magic", func(b []byte) []byte { b[0] = 'X'; return b }, ErrNotShm},
		{"version", func(b []byte) []byte { le.PutUint32(b[layout.HdrVersion:], 1); return b }, ErrVersion},
		{"slots0", func(b []byte) []byte { le.PutUint32(b[layout.HdrSlots:], 0); return b }, ErrCorrupt},
		{"slotsHuge", func(b []byte) []byte { le.PutUint32(b[layout.HdrSlots:], 1<<31); return b }, ErrCorrupt},
		{"ringNotPow2", func(b []byte) []byte { le.PutUint32(b[layout.HdrRingRecs:], 17); return b }, ErrCorrupt},
		{"slotSize", func(b []byte) []byte { le.PutUint64(b[layout.HdrSlotSize:], 64); return b }, ErrCorrupt},
		{"fileSize", func(b []byte) []byte { le.PutUint64(b[layout.HdrFileSize:], 1<<62); return b }, ErrCorrupt},
		{"ringOffset", func(b []byte) []byte { le.PutUint32(b[layout.HdrRingOffset:], 0); return b }, ErrCorrupt},
		{"reserved", func(b []byte) []byte { b[layout.HdrReserved] = 1; return b }, ErrCorrupt},
		{"moreSlotsThanFile", func(b []byte) []byte {
			g, _ := layout.NewGeometry(3, 16, 4)
			g.PutHeader(b)
			return b
		}, ErrTruncated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.edit(append([]byte(nil), good...))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if cl, err := Open(path); !errors.Is(err, c.want) {
				if err == nil {
					cl.Close()
				}
				t.Errorf("Open: %v, want %v", err, c.want)
			}
			if _, err := shm.Inspect(path); !errors.Is(err, c.want) {
				t.Errorf("shm.Inspect: %v, want %v", err, c.want)
			}
			// A host replaces a file that is recognisably a damaged tapes
			// file (or empty, or zero), with a warning, and refuses one
			// that may be someone else's or another release's.
			var logb strings.Builder
			log := slog.New(slog.NewTextHandler(&logb, nil))
			replace := len(b) == 0 || string(b[:min(len(b), 8)]) == layout.Magic && !errors.Is(c.want, ErrVersion)
			h, err := Create(path, Config{Logger: log})
			switch {
			case replace && err != nil:
				t.Errorf("Create on a damaged file: %v, want it replaced", err)
			case replace:
				h.Close()
				if !strings.Contains(logb.String(), "replaced a damaged file") {
					t.Errorf("no warning logged for the replacement: %q", logb.String())
				}
				if _, err := shm.Inspect(path); err != nil {
					t.Errorf("the replacement does not validate: %v", err)
				}
			case !errors.Is(err, c.want):
				if err == nil {
					h.Close()
				}
				t.Errorf("Create: %v, want %v", err, c.want)
			}
		})
	}
}

// A file left by a host of layout version 2 (a 128-byte header, its first
// slot where version 3's doorbell is) is refused by a worker and by a host
// with an error naming both versions, and left as it was: a worker that
// misread it would ring doorbell bits into the first slot's state word.
func TestOlderLayoutRefused(t *testing.T) {
	path, b := validFile(t)
	le := binary.LittleEndian
	le.PutUint32(b[layout.HdrVersion:], 2)
	le.PutUint32(b[layout.HdrHeaderSize:], 128)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	const want = "unsupported layout version 2 (this build reads 3)"
	if cl, err := shm.Open(path); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), want) {
		if err == nil {
			cl.Close()
		}
		t.Errorf("Open: %v, want %q", err, want)
	}
	if h, err := Create(path, Config{}); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), want) {
		if err == nil {
			h.Close()
		}
		t.Errorf("Create: %v, want %q", err, want)
	}
	if after, err := os.ReadFile(path); err != nil || string(after) != string(b) {
		t.Errorf("the refused file changed (%v)", err)
	}
}

func TestFileSafety(t *testing.T) {
	path, _ := validFile(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
	link := filepath.Join(filepath.Dir(path), "link.shm")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(link, Config{}); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("Create through a symlink: %v", err)
	}
	if _, err := Open(link); err == nil {
		t.Errorf("Open through a symlink succeeded")
	}
	dir := filepath.Join(filepath.Dir(path), "d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(dir, Config{}); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Create on a directory: %v", err)
	}

	// DefaultPath creates a private directory and refuses a shared one.
	xdg := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	p, err := shm.DefaultPath()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(xdg, "tapes", "metrics.shm"); p != want {
		t.Errorf("DefaultPath = %s, want %s", p, want)
	}
	if fi, err := os.Stat(filepath.Dir(p)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v %v", fi.Mode(), err)
	}
	os.Chmod(filepath.Dir(p), 0o755)
	if _, err := shm.DefaultPath(); !errors.Is(err, ErrBadPerm) {
		t.Errorf("DefaultPath with a 0755 directory: %v", err)
	}

	if os.Getuid() == 0 {
		// As root, make the file belong to someone else.
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := Create(path, Config{}); !errors.Is(err, ErrNotOwner) {
			t.Errorf("Create on another user's file: %v", err)
		}
		if _, err := Open(path); !errors.Is(err, ErrNotOwner) {
			t.Errorf("Open on another user's file: %v", err)
		}
	}
}

func TestSecondHostRefused(t *testing.T) {
	h := newHost(t, Config{Slots: 2, RingRecords: 16})
	if h2, err := Create(h.Path(), Config{}); !errors.Is(err, ErrLocked) {
		if err == nil {
			h2.Close()
		}
		t.Fatalf("second host: %v, want ErrLocked", err)
	}
	rep, err := shm.Inspect(h.Path())
	if err != nil || !rep.Locked {
		t.Fatalf("shm.Inspect: %v locked=%v", err, rep != nil && rep.Locked)
	}
	h.Close()
	h3, err := Create(h.Path(), Config{Slots: 9, RingRecords: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer h3.Close()
	if h3.Slots() != 2 || h3.RingRecords() != 16 {
		t.Errorf("attach took the config (%d slots, %d records), not the file's", h3.Slots(), h3.RingRecords())
	}
}

// hostile returns a host, a registry and a client whose slot the test
// scribbles on.
func hostile(t *testing.T) (*Host, *registry.Registry, *Client) {
	t.Helper()
	h := newHost(t, Config{Slots: 2, RingRecords: 16, MaxMetrics: 8})
	c, err := Open(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return h, h.Registry(), c
}

func (c *Client) rawRecord(t *testing.T, b [16]byte) {
	t.Helper()
	r := atomic.AddUint64(c.reserve, 1) - 1
	off := c.base + c.g.RingOffset + int(r&c.mask)*wire.RecordSize
	copy(c.m[off+8:off+16], b[8:])
	atomic.StoreUint64(u64(c.m, off), binary.LittleEndian.Uint64(b[:8]))
}

func rec(id uint32, k wire.Kind, v uint64) (b [16]byte) {
	wire.Record{ID: id, Kind: k, Value: v}.Put(b[:])
	return b
}

func counters(r *registry.Registry, names ...string) map[string]int64 {
	m := map[string]int64{}
	for _, n := range names {
		m[n] = r.Counter("tapes.shm." + n).Value()
	}
	return m
}

func TestHostileRecords(t *testing.T) {
	h, r, c := hostile(t)
	c.Counter("ok.count").Add(5)
	badKind := rec(0, wire.KindCounter, 1)
	badKind[4] = 9
	resv := rec(0, wire.KindCounter, 1)
	resv[6] = 1
	c.rawRecord(t, badKind)
	c.rawRecord(t, resv)
	c.rawRecord(t, rec(999, wire.KindCounter, 1))   // undefined id
	c.rawRecord(t, rec(1<<31, wire.KindCounter, 1)) // far out of range
	c.rawRecord(t, rec(0, wire.KindTimer, 1))       // kind disagrees with the definition
	c.Counter("ok.count").Add(7)
	n, err := h.DrainOnce()
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || r.Counter("ok.count").Value() != 12 {
		t.Errorf("applied %d, counter %d; want 2 and 12", n, r.Counter("ok.count").Value())
	}
	if got := counters(r, "malformed")["malformed"]; got != 5 {
		t.Errorf("malformed = %d, want 5", got)
	}

	// The host's consumer index scribbled on, and the reserve index running
	// backwards: counted, and the host keeps its own view.
	atomic.StoreUint64(c.consumer, 3)
	c.Counter("ok.count").Inc()
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if got := r.Counter("ok.count").Value(); got != 13 {
		t.Errorf("counter = %d after consumer scribble, want 13", got)
	}
	atomic.StoreUint64(c.reserve, 1)
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if got := counters(r, "malformed")["malformed"]; got < 7 {
		t.Errorf("malformed = %d after index scribbles, want >= 7", got)
	}
}

// A negative duration is not recorded: the client drops it before the
// ring, and one written into the ring anyway is refused by the applier and
// counted malformed (no client writes one).
func TestNegativeDurations(t *testing.T) {
	h, r, c := hostile(t)
	tm := c.Timer("t")
	res := atomic.LoadUint64(c.reserve)
	tm.Update(-time.Millisecond)
	if got := atomic.LoadUint64(c.reserve); got != res {
		t.Fatalf("a negative duration took %d ring slots", got-res)
	}
	tm.Update(2 * time.Millisecond)
	c.rawRecord(t, rec(0, wire.KindTimer, uint64(1<<64-1000))) // -1 µs
	tm.Update(3 * time.Millisecond)
	n, err := h.DrainOnce()
	if err != nil {
		t.Fatal(err)
	}
	s := r.Timer("t").Snapshot()
	if n != 2 || s.Count != 2 || s.Min != 0.002 || s.Max != 0.003 {
		t.Errorf("drained %d, timer count %d min %v max %v; want 2, 2, 0.002, 0.003", n, s.Count, s.Min, s.Max)
	}
	if got := counters(r, "malformed")["malformed"]; got != 1 {
		t.Errorf("malformed = %d, want 1 (the negative duration)", got)
	}
}

func writeDef(c *Client, id int, k wire.Kind, mode shm.GaugeMode, name string) {
	e := c.m[c.base+c.g.DefOffset+id*layout.DefSize:][:layout.DefSize]
	clear(e)
	e[defKind], e[defMode], e[defNameLen] = byte(k), byte(mode), byte(len(name))
	copy(e[defName:], name)
}

func TestHostileDefinitions(t *testing.T) {
	h, r, c := hostile(t)
	r.Timer("taken.timer") // the host's own code owns this name as a timer
	defs := []struct {
		k    wire.Kind
		mode shm.GaugeMode
		name string
	}{
		{wire.KindCounter, 0, "good.one"},               // 0: fine
		{wire.KindCounter, 0, "bad name"},               // 1: invalid name
		{7, 0, "bad.kind"},                              // 2: invalid kind
		{wire.KindCounter, 0, "taken.timer"},            // 3: kind conflict with the registry
		{wire.KindGauge, 9, "bad.mode"},                 // 4: invalid gauge mode
		{wire.KindCounter, 0, "tapes.shm.drained"},      // 5: inside the host's prefix
		{wire.KindCounter, 0, ""},                       // 6: empty name
		{wire.KindCounter, shm.GaugeSum, "mode.on.ctr"}, // 7: mode on a non-gauge
	}
	for i, d := range defs {
		writeDef(c, i, d.k, d.mode, d.name)
	}
	atomic.StoreUint64(c.defCount, uint64(len(defs)))
	for i := range defs {
		k := defs[i].k
		if !k.Valid() {
			k = wire.KindCounter
		}
		c.rawRecord(t, rec(uint32(i), k, 1))
	}
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	got := counters(r, "rejected", "discarded", "malformed", "drained")
	if got["rejected"] != 7 || got["drained"] != 1 || got["discarded"]+got["malformed"] != 7 {
		t.Errorf("counts %v; want 7 rejected, 1 event, 7 discarded or malformed", got)
	}
	if r.Counter("good.one").Value() != 1 || r.Counter("tapes.shm.drained").Value() != 1 {
		t.Errorf("good.one = %d, events = %d", r.Counter("good.one").Value(), r.Counter("tapes.shm.drained").Value())
	}

	// A definition count beyond the table is clamped and counted.
	atomic.StoreUint64(c.defCount, 1<<40)
	c.rawRecord(t, rec(100, wire.KindCounter, 1))
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if m := counters(r, "malformed")["malformed"]; m <= got["malformed"] {
		t.Errorf("malformed did not grow for a huge definition count")
	}
}

func TestHostileSlotStates(t *testing.T) {
	h := newHost(t, Config{Slots: 4, RingRecords: 16})
	r := h.Registry()
	m := h.m
	// A finished process: its pid is dead.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := uint32(cmd.Process.Pid)
	me := uint32(os.Getpid())
	start, _ := sys.SelfStart()
	set := func(i int, w, st uint64) {
		atomic.StoreUint64(u64(m, h.g.SlotOff(i)+slotState), w)
		atomic.StoreUint64(u64(m, h.g.SlotOff(i)+slotStart), st)
	}
	set(0, packState(0, 1, layout.StateActive), 0)         // no pid
	set(1, packState(me, 1, 9), start)                     // state byte out of range
	set(2, packState(dead, 1, layout.StateActive), 12345)  // dead pid
	set(3, packState(me, 1, layout.StateActive), start+77) // pid reused: start time differs
	// Records left behind by the dead worker are still applied.
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	rep, err := shm.Inspect(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Workers) != 0 {
		t.Errorf("slots not reclaimed: %+v", rep.Workers)
	}
	if got := r.Counter("tapes.shm.reclaimed").Value(); got != 4 {
		t.Errorf("reclaimed = %d, want 4", got)
	}
	// The reclaimed slots are usable.
	for i := 0; i < 4; i++ {
		c, err := Open(h.Path())
		if err != nil {
			t.Fatal(err)
		}
		c.Counter("again").Inc()
	}
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if got := r.Counter("again").Value(); got != 4 {
		t.Errorf("again = %d", got)
	}
}

func TestDeadWorkerRecordsApplied(t *testing.T) {
	h := newHost(t, Config{Slots: 2, RingRecords: 16})
	c, err := Open(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	c.Counter("left.behind").Add(3)
	c.Timer("left.timer").Update(time.Millisecond)
	// Claim a record and never commit it, as a worker killed mid-record does.
	atomic.AddUint64(c.reserve, 1)
	c.Counter("left.behind").Add(4)
	// Make the slot look like a dead process's.
	cmd := exec.Command("true")
	cmd.Run()
	st := u64(c.m, c.base+slotState)
	_, gen, _ := unpackState(atomic.LoadUint64(st))
	atomic.StoreUint64(st, packState(uint32(cmd.Process.Pid), gen, layout.StateActive))
	r := h.Registry()
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	got := counters(r, "aborted", "reclaimed")
	if r.Counter("left.behind").Value() != 7 || r.Timer("left.timer").Count() != 1 || got["aborted"] != 1 || got["reclaimed"] != 1 {
		t.Errorf("left.behind %d timer %d %v", r.Counter("left.behind").Value(), r.Timer("left.timer").Count(), got)
	}
}

// TestTruncatedUnderHost truncates the file while a host has it mapped: the
// host must return ErrTruncated, from its size check or from the SIGBUS the
// read raises, and never crash.
func TestTruncatedUnderHost(t *testing.T) {
	h, _, c := hostile(t)
	c.Counter("x").Inc()
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(h.Path(), 0); err != nil {
		t.Fatal(err)
	}
	// Skip the periodic size check so that the pass touches the missing
	// pages and takes the SIGBUS.
	h.lastLive, h.liveEvery = time.Now(), time.Hour
	if _, err := h.drain(false); !errors.Is(err, ErrTruncated) {
		t.Fatalf("drain after truncation: %v, want ErrTruncated from the fault", err)
	}
	if _, err := h.DrainOnce(); !errors.Is(err, ErrTruncated) {
		t.Fatalf("DrainOnce after truncation: %v", err)
	}
	if _, err := shm.Inspect(h.Path()); !errors.Is(err, ErrTruncated) {
		t.Fatalf("shm.Inspect after truncation: %v", err)
	}
}
