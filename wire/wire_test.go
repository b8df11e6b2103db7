package wire

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	valid := []string{
		"a", "A", "0", "_", "-", "my.http.latency", "a-b_c.D9", "x.y.z.w",
		strings.Repeat("a", MaxNameLen),
		strings.Repeat("ab.", 84) + "abc", // 255 bytes with dots
	}
	for _, name := range valid {
		if err := ValidateName(name); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	invalid := map[string]string{
		"":                                "empty name",
		".a":                              "empty segment at byte 0",
		"a.":                              "ends with an empty segment",
		"a..b":                            "empty segment at byte 2",
		".":                               "empty segment",
		"a b":                             `byte ' ' at 1`,
		"a/b":                             `byte '/' at 1`,
		"a:b":                             `byte ':' at 1`,
		"é":                               "byte",
		"a\x00":                           "byte",
		"tab\t":                           "byte",
		strings.Repeat("a", MaxNameLen+1): "256 bytes, the limit is 255",
	}
	for name, want := range invalid {
		err := ValidateName(name)
		if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", name, err, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = ValidateName("my.http.latency") }); n != 0 {
		t.Errorf("valid name allocates %v times", n)
	}
}

func TestKind(t *testing.T) {
	want := map[Kind]string{KindCounter: "counter", KindGauge: "gauge", KindMeter: "meter", KindTimer: "timer", KindHistogram: "histogram"}
	for k, s := range want {
		if !k.Valid() || k.String() != s {
			t.Errorf("%d: %v %q", k, k.Valid(), k.String())
		}
	}
	for _, k := range []Kind{KindInvalid, 6, 255} {
		if k.Valid() {
			t.Errorf("%d valid", k)
		}
	}
	if Kind(7).String() != "kind(7)" || KindInvalid.String() != "kind(0)" {
		t.Errorf("%q %q", Kind(7).String(), KindInvalid.String())
	}
	// The codes are a file format and an ABI: they must never change.
	if KindCounter != 1 || KindGauge != 2 || KindMeter != 3 || KindTimer != 4 || KindHistogram != 5 {
		t.Fatal("kind codes changed")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	recs := []Record{
		IntRecord(0, KindCounter, -1),
		IntRecord(1, KindCounter, math.MaxInt64),
		IntRecord(math.MaxUint32, KindMeter, 3),
		IntRecord(7, KindTimer, 1_500_000),
		FloatRecord(8, KindHistogram, -2.5e-300),
		FloatRecord(9, KindGauge, math.Inf(-1)),
		FloatRecord(10, KindHistogram, math.NaN()),
	}
	for _, r := range recs {
		b := make([]byte, RecordSize+3)
		for i := range b {
			b[i] = 0xff // Put must write every byte of the record, reserved ones as 0
		}
		r.Put(b)
		if b[RecordSize] != 0xff {
			t.Fatal("Put wrote past the record")
		}
		got, err := Decode(b[:RecordSize])
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		if got.ID != r.ID || got.Kind != r.Kind || got.Value != r.Value {
			t.Fatalf("round trip %+v -> %+v", r, got)
		}
	}
	// Exact bytes, little-endian, so that other languages can rely on them.
	var b [RecordSize]byte
	IntRecord(0x01020304, KindTimer, 0x1112131415161718).Put(b[:])
	want := [RecordSize]byte{4, 3, 2, 1, 4, 0, 0, 0, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11}
	if b != want {
		t.Fatalf("bytes % x", b)
	}
	r, _ := Decode(b[:])
	if r.Int() != 0x1112131415161718 {
		t.Fatal("Int")
	}
	FloatRecord(1, KindHistogram, 0.25).Put(b[:])
	if r, _ := Decode(b[:]); r.Float() != 0.25 || !IsFloat(r.Kind) || IsFloat(KindTimer) || IsFloat(KindCounter) || !IsFloat(KindGauge) {
		t.Fatal("Float")
	}
}

func TestDecodeRejects(t *testing.T) {
	var good [RecordSize]byte
	IntRecord(5, KindCounter, 1).Put(good[:])
	for n := 0; n < RecordSize; n++ {
		if _, err := Decode(good[:n]); !errors.Is(err, ErrShortRecord) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
	for _, k := range []byte{0, 6, 200, 255} {
		b := good
		b[RecordKindOff] = k
		if r, err := Decode(b[:]); !errors.Is(err, ErrBadKind) || r != (Record{}) {
			t.Errorf("kind %d: %v %+v", k, err, r)
		}
	}
	for i := range 3 {
		b := good
		b[RecordResvOff+i] = 1
		if r, err := Decode(b[:]); !errors.Is(err, ErrReserved) || r != (Record{}) {
			t.Errorf("reserved byte %d: %v %+v", i, err, r)
		}
	}
	// Longer input is fine: Decode reads the first record.
	long := append(good[:], 9, 9, 9)
	if r, err := Decode(long); err != nil || r.ID != 5 {
		t.Errorf("long input: %v %+v", err, r)
	}
}

// Word0 and the value are exactly the two little-endian words Put writes,
// and DecodeWords reads them back as Decode reads the bytes.
func TestWords(t *testing.T) {
	for _, r := range []Record{
		IntRecord(0, KindCounter, 1),
		IntRecord(0xFFFFFFFF, KindTimer, -5),
		FloatRecord(7, KindGauge, math.Pi),
	} {
		var b [RecordSize]byte
		r.Put(b[:])
		w0 := Word0(r.ID, r.Kind)
		if got := binary.LittleEndian.Uint64(b[:8]); got != w0 {
			t.Errorf("%+v: Word0 %#x, Put wrote %#x", r, w0, got)
		}
		if WordKind(w0) != r.Kind || WordID(w0) != r.ID {
			t.Errorf("%+v: WordKind %v, WordID %d", r, WordKind(w0), WordID(w0))
		}
		if got, err := DecodeWords(w0, binary.LittleEndian.Uint64(b[8:])); err != nil || got != r {
			t.Errorf("%+v: DecodeWords = %+v, %v", r, got, err)
		}
	}
	// A reserved byte set does not change the kind or the id read.
	if w := Word0(9, KindMeter) | 1<<56; WordKind(w) != KindMeter || WordID(w) != 9 {
		t.Errorf("%#x: WordKind %v, WordID %d", w, WordKind(w), WordID(w))
	}
	if WordKind(0) != 0 {
		t.Error("an unwritten word has a kind")
	}
}
