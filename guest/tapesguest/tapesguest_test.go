package tapesguest

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"
	"unsafe"

	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tapes-go/tapes/wire"
)

// The buffer's two-word records must decode as wire records. WebAssembly is
// little-endian; the test reads the buffer's bytes the same way on hosts
// that are too.
func TestBufferIsWireRecords(t *testing.T) {
	var x uint16 = 1
	if *(*byte)(unsafe.Pointer(&x)) != 1 {
		t.Skip("big-endian host: the buffer layout is only defined for little-endian wasm")
	}
	buffered = 0
	defer func() { buffered = 0 }()
	c := CounterHandle{wire.Word0(7, wire.KindCounter)}
	g := GaugeHandle{wire.Word0(0xABCDEF, wire.KindGauge)}
	tm := TimerHandle{w: wire.Word0(3, wire.KindTimer)}
	c.Add(-5)
	g.Set(2.5)
	tm.Update(1500)
	Record(9, wire.KindHistogram, math.Float64bits(-1e300))
	want := []wire.Record{
		wire.IntRecord(7, wire.KindCounter, -5),
		wire.FloatRecord(0xABCDEF, wire.KindGauge, 2.5),
		wire.IntRecord(3, wire.KindTimer, 1500),
		wire.FloatRecord(9, wire.KindHistogram, -1e300),
	}
	if int(buffered) != len(want) {
		t.Fatalf("%d records buffered, want %d", buffered, len(want))
	}
	raw := make([]byte, 0, len(want)*wire.RecordSize)
	for i := range want {
		raw = binary.LittleEndian.AppendUint64(raw, buf[i][0])
		raw = binary.LittleEndian.AppendUint64(raw, buf[i][1])
	}
	for i, w := range want {
		got, err := wire.Decode(raw[i*wire.RecordSize:])
		if err != nil || got != w {
			t.Errorf("record %d = %+v, %v; want %+v", i, got, err, w)
		}
		var enc [wire.RecordSize]byte
		w.Put(enc[:])
		if string(enc[:]) != string(raw[i*wire.RecordSize:(i+1)*wire.RecordSize]) {
			t.Errorf("record %d bytes % x, wire.Put gives % x", i, raw[i*16:(i+1)*16], enc)
		}
	}
}

// The buffer is sent as soon as it is full, so it never holds more than
// BufferRecords-1 records between events. Outside a host the send fails,
// and the records are dropped like a batch the host refused.
func TestFlushWhenFull(t *testing.T) {
	buffered = 0
	defer func() { buffered = 0 }()
	c := CounterHandle{wire.Word0(1, wire.KindCounter)}
	for i := 1; i < BufferRecords; i++ {
		c.Inc()
		if Buffered() != i {
			t.Fatalf("after %d events %d are buffered", i, Buffered())
		}
	}
	c.Inc()
	if Buffered() != 0 {
		t.Fatalf("a full buffer was not sent: %d buffered", Buffered())
	}
	c.Inc()
	if Buffered() != 1 {
		t.Fatalf("%d buffered after one more event, want 1", Buffered())
	}
}

func TestNoHost(t *testing.T) {
	if _, err := Define(wire.KindCounter, "x"); !errors.Is(err, ErrNoHost) {
		t.Errorf("Define = %v, want ErrNoHost", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("Counter outside a host did not panic")
		}
	}()
	Counter("x")
}

// TestGuestImportsWireAlone: a guest carries only what it records with.
// The handle interfaces and the Stopwatch are wire's so that the SDK
// needs nothing else of this module (docs/guest-abi.md has the size a
// registry import cost a plugin). Fails if the SDK, for wasip1, imports
// any other package of the module.
func TestGuestImportsWireAlone(t *testing.T) {
	deps := testenv.Deps(t, testenv.Module+"/guest/tapesguest", "GOOS=wasip1", "GOARCH=wasm")
	want := []string{testenv.Module + "/wire", testenv.Module + "/guest/tapesguest"}
	if !slices.Equal(deps, want) {
		t.Fatalf("guest/tapesguest (wasip1) imports %v from this module; want only %v", deps, want)
	}
}

// The SDK's handles have the methods of the handle interfaces: code
// written against them records the same in a guest as in a host.
var (
	_ wire.CounterHandle   = CounterHandle{}
	_ wire.GaugeHandle     = GaugeHandle{}
	_ wire.MeterHandle     = MeterHandle{}
	_ wire.HistogramHandle = HistogramHandle{}
	_ wire.TimerHandle     = TimerHandle{}
)
