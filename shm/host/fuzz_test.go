package host

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/internal/layout"
	"github.com/tapes-go/tapes/wire"
)

// FuzzDecode feeds arbitrary 16-byte records through a real host's record
// path: committed into a worker's ring, drained, decoded with wire.Decode and
// checked against the worker's definitions. Nothing may panic, and every
// committed record is either applied or counted.
func FuzzDecode(f *testing.F) {
	for _, r := range []wire.Record{
		wire.IntRecord(0, wire.KindCounter, 1),
		wire.IntRecord(1, wire.KindTimer, -5),
		wire.FloatRecord(2, wire.KindHistogram, 1.5),
		wire.FloatRecord(3, wire.KindGauge, 2),
		wire.IntRecord(4, wire.KindMeter, 1<<62),
		wire.IntRecord(9, wire.KindCounter, 1),
		{ID: 3, Kind: wire.KindGauge, Value: 0x7ff8000000000001}, // NaN
	} {
		var b [16]byte
		r.Put(b[:])
		f.Add(b[:])
	}
	f.Add(make([]byte, 16))
	f.Add([]byte{0, 0, 0, 0, 6, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{1, 0, 0, 0, 4, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})

	dir, err := os.MkdirTemp(tmpfsDir(), "tapes-shm-fuzz-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	h, err := Create(filepath.Join(dir, "f.shm"), Config{Slots: 1, RingRecords: 4, MaxMetrics: 8})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { h.Close() })
	c, err := Open(h.Path())
	if err != nil {
		f.Fatal(err)
	}
	c.Counter("f.counter")
	c.Timer("f.timer")
	c.Histogram("f.histogram")
	c.Gauge("f.gauge", nil)
	c.Meter("f.meter")
	r := h.Registry()
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) != wire.RecordSize {
			if _, err := wire.Decode(b); len(b) < wire.RecordSize && !errors.Is(err, wire.ErrShortRecord) {
				t.Fatalf("Decode of %d bytes: %v", len(b), err)
			}
			return
		}
		before := counters(r, "drained", "malformed", "discarded")
		committed := b[wire.RecordKindOff] != 0
		var rec [16]byte
		copy(rec[:], b)
		if committed {
			c.rawRecord(t, rec)
			c.ringBell()
		}
		// Half the inputs go through the doorbell's pass, half through
		// the full scan: both must count every record once.
		drain := h.DrainOnce
		if b[8]&1 == 0 {
			drain = func() (int, error) { return h.drain(false) }
		}
		n, err := drain()
		if err != nil {
			t.Fatal(err)
		}
		after := counters(r, "drained", "malformed", "discarded")
		total := func(m map[string]int64) int64 { return m["drained"] + m["malformed"] + m["discarded"] }
		want := int64(0)
		if committed {
			want = 1
		}
		if total(after)-total(before) != want || int64(n) != after["drained"]-before["drained"] {
			t.Fatalf("record %x: counts %v -> %v, n %d", b, before, after, n)
		}
		if _, err := wire.Decode(b); err != nil && after["drained"] != before["drained"] {
			t.Fatalf("record %x applied although Decode says %v", b, err)
		}
		if atomic.LoadUint64(c.consumer) != atomic.LoadUint64(c.reserve) {
			t.Fatalf("ring not drained")
		}
	})
}

// FuzzOpenFile writes arbitrary bytes as a whole file and runs everything
// that reads files over it: shm.Inspect, a worker's Open, a host's attach and
// a drain. Errors are fine; panics and hangs are not.
func FuzzOpenFile(f *testing.F) {
	g, _ := layout.NewGeometry(2, 4, 2)
	good := make([]byte, g.FileSize)
	g.PutHeader(good)
	f.Add(good)
	// A file with an active slot holding records and definitions.
	busy := append([]byte(nil), good...)
	s0 := g.SlotOff(0)
	le := binary.LittleEndian
	le.PutUint64(busy[s0+slotState:], packState(uint32(os.Getpid()), 1, layout.StateActive))
	le.PutUint64(busy[s0+slotDefCount:], 2)
	le.PutUint64(busy[s0+slotReserve:], 3)
	e := busy[s0+g.DefOffset:]
	e[defKind], e[defNameLen] = byte(wire.KindCounter), 1
	e[defName] = 'a'
	e = busy[s0+g.DefOffset+layout.DefSize:]
	e[defKind], e[defMode], e[defNameLen] = byte(wire.KindGauge), byte(shm.GaugeMax), 1
	e[defName] = 'b'
	wire.IntRecord(0, wire.KindCounter, 5).Put(busy[s0+g.RingOffset:])
	wire.FloatRecord(1, wire.KindGauge, 5).Put(busy[s0+g.RingOffset+16:])
	f.Add(busy)
	// A slot a worker was claiming (and scrubbing), the header's worker
	// words and the canary set.
	claiming := append([]byte(nil), busy...)
	s1 := g.SlotOff(1)
	le.PutUint64(claiming[s1+slotState:], packState(uint32(os.Getpid()), 3, layout.StateClaiming))
	le.PutUint64(claiming[s1+slotReserve:], 9)
	le.PutUint64(claiming[hdrClaimWaits:], 4)
	le.PutUint64(claiming[hdrRefused:], 2)
	le.PutUint64(claiming[g.TrailerOff()+trailerCanary:], 1<<63|5)
	f.Add(claiming)
	f.Add(good[:layout.HeaderSize])
	f.Add([]byte("TAPESHM\x00"))
	dir, err := os.MkdirTemp(tmpfsDir(), "tapes-shm-fuzz-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "f.shm")
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		os.Remove(path)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if rep, err := shm.Inspect(path); err == nil {
			rep.WriteText(discard{})
		}
		h, err := Create(path, Config{Logger: slog.New(slog.DiscardHandler)})
		// A host replaces only what is recognisably a damaged tapes file
		// (or empty, or zero): anything else is left as it was.
		ours := len(b) >= len(layout.Magic) && string(b[:len(layout.Magic)]) == layout.Magic
		zero := !slices.ContainsFunc(b[:min(len(b), layout.HeaderSize)], func(c byte) bool { return c != 0 })
		if !ours && !zero {
			if err == nil {
				t.Fatalf("Create attached to a file without the magic")
			}
			if after, rerr := os.ReadFile(path); rerr != nil || !bytes.Equal(after, b) {
				t.Fatalf("Create changed a file it refused (%v): %v", err, rerr)
			}
		}
		if err != nil {
			return
		}
		defer h.Close()
		for i := 0; i < 2; i++ {
			if _, err := h.DrainOnce(); err != nil {
				t.Fatalf("DrainOnce on a file that attached: %v", err)
			}
		}
		if c, err := Open(path); err == nil {
			c.Counter("fuzz.c").Inc()
			c.Close()
			if _, err := h.DrainOnce(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
