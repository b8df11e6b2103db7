package hostabi_test

import (
	"strings"
	"testing"

	"github.com/tetratelabs/wazero/api"

	"github.com/tapes-go/tapes/hostabi"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// defineName writes name into the guest's scratch buffer and defines it.
func defineName(t *testing.T, mod api.Module, kind uint32, name string) wire.Status {
	t.Helper()
	ptr := uint32(call(t, mod, "scratch"))
	if !mod.Memory().Write(ptr, []byte(name)) {
		t.Fatal("cannot write scratch")
	}
	return wire.Status(call(t, mod, "define_raw", uint64(kind), uint64(ptr), uint64(len(name))))
}

func TestHostileOutOfBounds(t *testing.T) {
	r := registry.New()
	mod, host := instantiate(t, cGuest(t, "hostile"), r, hostabi.Config{Prefix: "plugins.h"})
	size := uint64(mod.Memory().Size())
	for _, c := range []struct {
		fn     string
		params []uint64
	}{
		{"define_raw", []uint64{1, size - 2, 10}},         // runs past the end
		{"define_raw", []uint64{1, size, 1}},              // starts at the end
		{"define_raw", []uint64{1, 0xFFFFFFFF, 2}},        // ptr+len wraps in 32 bits
		{"define_raw", []uint64{1, 0, 0xFFFFFFFF}},        // 4 GiB name
		{"batch_raw", []uint64{size - 16, 2}},             // second record past the end
		{"batch_raw", []uint64{0xFFFFFFF0, 1}},            // far outside
		{"batch_raw", []uint64{0, 0x10000000}},            // n*16 == 4 GiB, overflows uint32
		{"batch_raw", []uint64{0, 0xFFFFFFFF}},            // n*16 overflows further
		{"batch_raw", []uint64{16, size / 16}},            // one record too many
		{"define_raw", []uint64{1, size - 1, 0x7FFFFFFF}}, // int32 overflow in ptr+len
	} {
		if s := wire.Status(call(t, mod, c.fn, c.params...)); s != wire.StatusMemory {
			t.Errorf("%s%v = %v, want %v", c.fn, c.params, s, wire.StatusMemory)
		}
	}
	if r.Len() != 0 {
		t.Errorf("registry has %d metrics after out-of-bounds calls", r.Len())
	}
	if st := host.Stats(); st.Rejected != 10 || st.LastStatus != wire.StatusMemory {
		t.Errorf("stats: rejected %d last %d", st.Rejected, st.LastStatus)
	}
	// A batch of the whole memory is in bounds: every record reads as
	// garbage or zeros and is rejected, nothing is applied, nothing panics.
	if n := call(t, mod, "batch_raw", 0, size/16); n != int32(size/16) {
		t.Errorf("batch of all memory rejected %d of %d records", n, size/16)
	}
	// The guest still works.
	if s := defineName(t, mod, 1, "ok"); s != 0 {
		t.Errorf("define after hostile calls = %v", s)
	}
}

func TestHostileNames(t *testing.T) {
	r := registry.New()
	r.Gauge("plugins.h.taken", nil) // the host's own metric under the prefix
	mod, _ := instantiate(t, cGuest(t, "hostile"), r, hostabi.Config{Prefix: "plugins.h"})
	for _, c := range []struct {
		kind uint32
		name string
		want wire.Status
	}{
		{1, "", wire.StatusInvalidName},
		{1, "a..b", wire.StatusInvalidName},
		{1, ".a", wire.StatusInvalidName},
		{1, "a.", wire.StatusInvalidName},
		{1, "bad name", wire.StatusInvalidName},
		{1, "caf\xc3\xa9", wire.StatusInvalidName},
		{1, "nul\x00", wire.StatusInvalidName},
		{1, strings.Repeat("x", 256), wire.StatusInvalidName},
		{1, strings.Repeat("x", 255-len("plugins.h.")+1), wire.StatusInvalidName}, // too long with the prefix
		{0, "k0", wire.StatusInvalidKind},
		{6, "k6", wire.StatusInvalidKind},
		{0x101, "k257", wire.StatusInvalidKind}, // would be counter if truncated to a byte
		{1, "taken", wire.StatusKindConflict},
		{2, "taken", 0}, // same kind as the host's: shared, id 0
		{1, "dup", 1},
		{1, "dup", 1}, // the same name again: the same id
		{2, "dup", wire.StatusKindConflict},
		{1, "dup.sub", wire.StatusPrefixConflict},
		{3, "a.b", 2},
		{3, "a", wire.StatusPrefixConflict},
		{1, strings.Repeat("x", 255-len("plugins.h.")), 3},
	} {
		if s := defineName(t, mod, c.kind, c.name); s != c.want {
			t.Errorf("define(%d, %.20q) = %v (%d), want %v (%d)", c.kind, c.name, s, s, c.want, c.want)
		}
	}
	var names []string
	r.Each(func(name string, _ registry.Metric) { names = append(names, name) })
	want := "plugins.h.a.b plugins.h.dup plugins.h.taken plugins.h." + strings.Repeat("x", 245)
	if got := strings.Join(names, " "); got != want {
		t.Errorf("registry holds %s\nwant %s", got, want)
	}
}

// A guest defining a million metrics stops at the cap; the registry holds
// exactly the cap.
func TestHostileMillionMetrics(t *testing.T) {
	for _, c := range []struct {
		max int
		cap int
	}{
		{0, 4096}, // the default
		{100, 100},
	} {
		r := registry.New()
		mod, _ := instantiate(t, cGuest(t, "hostile"), r, hostabi.Config{Prefix: "plugins.h", MaxMetrics: c.max})
		if n := call(t, mod, "define_many", 1_000_000); n != int32(c.cap) {
			t.Errorf("defined %d metrics, want the cap %d", n, c.cap)
		}
		if s := wire.Status(call(t, mod, "last_status")); s != wire.StatusTooManyMetrics {
			t.Errorf("status after the cap = %v", s)
		}
		if r.Len() != c.cap {
			t.Errorf("registry has %d metrics, want %d", r.Len(), c.cap)
		}
		// Names already defined still resolve at the cap.
		if n := call(t, mod, "define_many", 10); n != 10 {
			t.Errorf("redefining existing names at the cap: %d of 10", n)
		}
	}
	// The registry's own limit is reported the same way.
	r := registry.New(registry.WithMaxMetrics(7))
	mod, _ := instantiate(t, cGuest(t, "hostile"), r, hostabi.Config{})
	if n := call(t, mod, "define_many", 100); n != 7 {
		t.Errorf("defined %d metrics under a registry limit of 7", n)
	}
}

// Batch records stand alone: bad ones are skipped and counted, good ones
// around them are applied.
func TestHostileBatchRecords(t *testing.T) {
	r := registry.New()
	mod, host := instantiate(t, cGuest(t, "hostile"), r, hostabi.Config{Prefix: "plugins.h"})
	id := defineName(t, mod, 1, "c")
	if id != 0 {
		t.Fatalf("define = %v", id)
	}
	c := r.Counter("plugins.h.c")
	if n := call(t, mod, "corrupt_batch", uint64(id)); n != 2 {
		t.Errorf("corrupt_batch rejected %d records, want 2", n)
	}
	if v := c.Value(); v != 30 {
		t.Errorf("counter = %d, want the 3 good records' 30", v)
	}
	if n := call(t, mod, "wrong_kind_batch", uint64(id)); n != 2 {
		t.Errorf("wrong_kind_batch rejected %d records, want 2", n)
	}
	if v := c.Value(); v != 31 {
		t.Errorf("counter = %d, want 31", v)
	}
	if st := host.Stats(); st.Rejected != 4 || st.Records != 4 || st.Batches != 2 {
		t.Errorf("stats: rejected %d records %d batches %d", st.Rejected, st.Records, st.Batches)
	}
	if s := wire.Status(call(t, mod, "add", 99, 1)); s != wire.StatusUnknownID {
		t.Errorf("add to an unknown id = %v", s)
	}
	if s := wire.Status(call(t, mod, "add", 0xFFFFFFFF, 1)); s != wire.StatusUnknownID {
		t.Errorf("add to id -1 = %v", s)
	}
	if s := wire.Status(call(t, mod, "batch_raw", 0, 0)); s != 0 {
		t.Errorf("empty batch = %v", s)
	}
}
