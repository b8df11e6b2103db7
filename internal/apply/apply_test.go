package apply

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// entry is the table entry for m.
func entry(k wire.Kind, m any) Entry {
	e, ok := NewEntry(k, m)
	if !ok {
		panic("NewEntry: " + k.String())
	}
	return e
}

// applyBatch applies buf as one batch, as hostabi's batch function does.
func applyBatch(t Table, buf []byte) (int32, wire.Status) {
	var b Batch
	b.Apply(t, buf)
	return b.Flush(t)
}

// addBatch applies buf as one batch record by record through Add, as a
// reader of words (the shm host) would.
func addBatch(t Table, buf []byte) (int32, wire.Status) {
	var b Batch
	var bad int32
	for ; len(buf) >= wire.RecordSize; buf = buf[wire.RecordSize:] {
		if b.Add(t, binary.LittleEndian.Uint64(buf), binary.LittleEndian.Uint64(buf[8:])) != wire.StatusOK {
			bad++
		}
	}
	rej, last := b.Flush(t)
	return rej + bad, last
}

// BenchmarkApplyBatch is the host's share of a batched event: decoding one
// record and adding it to a counter (or a histogram).
func BenchmarkApplyBatch(b *testing.B) {
	r := registry.New()
	ids := Table{entry(wire.KindCounter, r.Counter("c")), entry(wire.KindHistogram, r.Histogram("h"))}
	for _, k := range []wire.Kind{wire.KindCounter, wire.KindHistogram} {
		b.Run(k.String(), func(b *testing.B) {
			const n = 1024
			buf := make([]byte, n*wire.RecordSize)
			id := uint32(0)
			if k == wire.KindHistogram {
				id = 1
			}
			for i := 0; i < n; i++ {
				rec := wire.IntRecord(id, k, 1)
				if wire.IsFloat(k) {
					rec = wire.FloatRecord(id, k, float64(i))
				}
				rec.Put(buf[i*wire.RecordSize:])
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if rej, _ := applyBatch(ids, buf); rej != 0 {
					b.Fatal(rej)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}

// Records of one counter or meter are summed per batch; bad records among
// them are counted, never applied.
func TestApplyBatchRuns(t *testing.T) {
	r := registry.New()
	c, m, g := r.Counter("c"), r.Meter("m"), r.Gauge("g", nil)
	ids := Table{entry(wire.KindCounter, c), entry(wire.KindMeter, m), entry(wire.KindGauge, g)}
	recs := []wire.Record{
		wire.IntRecord(0, wire.KindCounter, 5),
		wire.IntRecord(0, wire.KindCounter, -2),
		{ID: 0, Kind: 9},                        // corrupt: ends the run, rejected
		wire.IntRecord(0, wire.KindCounter, 10), // a new run
		wire.IntRecord(1, wire.KindMeter, 3),
		wire.IntRecord(1, wire.KindMeter, 4),
		wire.IntRecord(0, wire.KindMeter, 100), // id 0 is a counter: rejected
		wire.IntRecord(0, wire.KindMeter, 100), // the same bad run: rejected too
		wire.FloatRecord(2, wire.KindGauge, 1.5),
		wire.IntRecord(7, wire.KindCounter, 1), // unknown id
		wire.IntRecord(7, wire.KindCounter, 1),
		wire.IntRecord(0, wire.KindCounter, 1),
	}
	buf := make([]byte, len(recs)*wire.RecordSize)
	for i, rec := range recs {
		rec.Put(buf[i*wire.RecordSize:])
	}
	buf[2*wire.RecordSize+wire.RecordKindOff] = 9
	rej, last := applyBatch(ids, buf)
	if rej != 5 {
		t.Errorf("rejected %d (last %v), want 5", rej, last)
	}
	if c.Value() != 14 || m.Count() != 7 || g.Value() != 1.5 {
		t.Errorf("counter %d meter %d gauge %v, want 14 7 1.5", c.Value(), m.Count(), g.Value())
	}
}

// More counters than sum slots, interleaved: every slot is evicted and
// reused, and the totals are still exact.
func TestApplyBatchSlotEviction(t *testing.T) {
	r := registry.New()
	const n = 3*sumSlots + 1
	var ids Table
	for i := 0; i < n; i++ {
		ids = append(ids, entry(wire.KindCounter, r.Counter("c"+string(rune('a'+i%26))+string(rune('a'+i/26)))))
	}
	var buf []byte
	want := make([]int64, n)
	for round := 0; round < 5; round++ {
		for i := 0; i < n; i++ {
			v := int64(i*round + 1)
			want[i] += v
			var b [wire.RecordSize]byte
			wire.IntRecord(uint32(i), wire.KindCounter, v).Put(b[:])
			buf = append(buf, b[:]...)
		}
	}
	if rej, _ := applyBatch(ids, buf); rej != 0 {
		t.Fatalf("rejected %d", rej)
	}
	for i := range ids {
		if got := ids[i].c.(*registry.Counter).Value(); got != want[i] {
			t.Errorf("counter %d = %d, want %d", i, got, want[i])
		}
	}
}

// A batch (through Apply, and through Add) gives the registry the state, and the caller the rejection
// count, that applying each record alone does, for random batches that mix
// every kind, runs, unknown ids, wrong kinds, negative durations and
// garbage words.
func TestApplyBatchEqualsOneByOne(t *testing.T) {
	// One P, so both registries' histograms add their values in one shard
	// in the same order.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	kinds := []wire.Kind{wire.KindCounter, wire.KindMeter, wire.KindTimer, wire.KindHistogram, wire.KindGauge}
	table := func(r *registry.Registry) Table {
		var ids Table
		for i, k := range append(kinds, kinds...) {
			m, err := r.GetOrCreate(k, fmt.Sprintf("m%d", i))
			if err != nil {
				t.Fatal(err)
			}
			e, ok := NewEntry(k, m)
			if !ok {
				t.Fatalf("%T", m)
			}
			ids = append(ids, e)
		}
		return ids
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for round := range 200 {
		clk := &fixedClock{t: time.Unix(1_700_000_000, 0)}
		ra, rb, rc := registry.New(registry.WithClock(clk)), registry.New(registry.WithClock(clk)), registry.New(registry.WithClock(clk))
		ida, idb, idc := table(ra), table(rb), table(rc)
		n := rng.IntN(600)
		buf := make([]byte, n*wire.RecordSize)
		id, k := uint32(0), wire.KindCounter
		for i := range n {
			if rng.IntN(4) == 0 { // else continue the current run
				id, k = uint32(rng.IntN(len(ida)+2)), kinds[rng.IntN(len(kinds))]
				if rng.IntN(3) != 0 { // mostly the id's own kind
					id %= uint32(len(ida))
					k = ida[id].kind
				}
			}
			rec := wire.IntRecord(id, k, rng.Int64N(2000)-100)
			if wire.IsFloat(k) {
				rec = wire.FloatRecord(id, k, rng.NormFloat64()*100)
			}
			rec.Put(buf[i*wire.RecordSize:])
			switch rng.IntN(40) {
			case 0:
				clear(buf[i*wire.RecordSize:][:8])
			case 1:
				buf[i*wire.RecordSize+wire.RecordResvOff+rng.IntN(3)] = 1
			case 2:
				buf[i*wire.RecordSize+wire.RecordKindOff] = byte(rng.IntN(256))
			}
		}
		rejA, _ := applyBatch(ida, buf)
		rejC, _ := addBatch(idc, buf)
		var rejB int32
		for i := range n {
			rec, err := wire.Decode(buf[i*wire.RecordSize:])
			if err != nil {
				rejB++
				continue
			}
			if idb.One(rec.ID, rec.Kind, rec.Value) != wire.StatusOK {
				rejB++
			}
		}
		if rejA != rejB || rejC != rejB {
			t.Fatalf("round %d: Apply rejected %d, Add %d, one by one %d", round, rejA, rejC, rejB)
		}
		if a, b := ra.Stats(), rb.Stats(); !reflect.DeepEqual(a, b) {
			t.Fatalf("round %d: registries differ\nApply      %v\none by one %v", round, a, b)
		}
		if c, b := rc.Stats(), rb.Stats(); !reflect.DeepEqual(c, b) {
			t.Fatalf("round %d: registries differ\nAdd        %v\none by one %v", round, c, b)
		}
	}
}

type fixedClock struct{ t time.Time }

func (c *fixedClock) Now() time.Time { return c.t }

// A reader whose table lags its writer (the shm host loads definitions
// lazily) learns of an unknown id from Add, extends the table and adds the
// record again; records of a Discard entry are accepted and counted, never
// applied.
func TestAddUnknownThenExtend(t *testing.T) {
	r := registry.New()
	c0, c1 := r.Counter("c0"), r.Counter("c1")
	tab := Table{entry(wire.KindCounter, c0)}
	var b Batch
	rec := wire.IntRecord(1, wire.KindCounter, 5)
	w0 := wire.Word0(rec.ID, rec.Kind)
	if st := b.Add(tab, w0, rec.Value); st != wire.StatusUnknownID {
		t.Fatalf("Add of id 1 in a 1-entry table = %v, want %v", st, wire.StatusUnknownID)
	}
	tab = append(tab, entry(wire.KindCounter, c1), Discard(wire.KindTimer))
	for range 3 {
		if st := b.Add(tab, w0, rec.Value); st != wire.StatusOK {
			t.Fatalf("Add after extending = %v", st)
		}
	}
	if st := b.Add(tab, wire.Word0(1, wire.KindMeter), 1); st != wire.StatusWrongKind {
		t.Errorf("a meter record for a counter id = %v", st)
	}
	for range 2 {
		if st := b.Add(tab, wire.Word0(2, wire.KindTimer), 7); st != wire.StatusOK {
			t.Errorf("Add for a Discard entry = %v", st)
		}
	}
	if b.Discarded() != 2 {
		t.Errorf("Discarded() = %d, want 2", b.Discarded())
	}
	if rej, _ := b.Flush(tab); rej != 0 {
		t.Errorf("Flush rejected %d: Add's refusals are the caller's to count", rej)
	}
	if c1.Value() != 15 || c0.Value() != 0 || b.Discarded() != 0 {
		t.Errorf("c0 %d c1 %d discarded after Flush %d; want 0 15 0", c0.Value(), c1.Value(), b.Discarded())
	}
	if st := tab.One(2, wire.KindTimer, 1); st != wire.StatusOK {
		t.Errorf("One for a Discard entry = %v", st)
	}
}
