package host

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/internal/layout"
	"github.com/tapes-go/tapes/wire"
)

// Attacks on the file and on the host's memory. Each test names the guard
// it checks.

// The file damaged under the host: truncated by a byte, shrunk and grown
// back before the host looked at its size, replaced, removed. Each is a
// *DamageError at the next liveness check, and stays one.
func TestDamageDetected(t *testing.T) {
	cases := []struct {
		name   string
		damage func(path string, size int64) error
		want   error
		detail string
	}{
		{"truncated", func(p string, n int64) error { return os.Truncate(p, n-1) }, ErrTruncated, "truncated to"},
		{"shrunk-regrown", func(p string, n int64) error {
			if err := os.Truncate(p, n-1); err != nil {
				return err
			}
			return os.Truncate(p, n)
		}, ErrTruncated, "canary"},
		{"replaced", func(p string, n int64) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(p+".x", b, 0o600); err != nil {
				return err
			}
			return os.Rename(p+".x", p)
		}, ErrReplaced, "replaced"},
		{"symlinked", func(p string, n int64) error {
			if err := os.Rename(p, p+".real"); err != nil {
				return err
			}
			return os.Symlink(p+".real", p)
		}, ErrReplaced, "replaced"},
		{"removed", func(p string, n int64) error { return os.Remove(p) }, ErrReplaced, "removed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, r, cl := hostile(t)
			cl.Counter("x").Inc()
			if _, err := h.DrainOnce(); err != nil {
				t.Fatal(err)
			}
			if err := c.damage(h.Path(), int64(h.g.FileSize)); err != nil {
				t.Fatal(err)
			}
			_, err := h.DrainOnce()
			var d *DamageError
			if !errors.As(err, &d) || !errors.Is(err, c.want) || !errors.Is(err, ErrDamaged) ||
				!strings.Contains(err.Error(), c.detail) || strings.Contains(err.Error(), "shm: shm:") {
				t.Fatalf("DrainOnce after the damage: %v; want a DamageError (%v) saying %q", err, c.want, c.detail)
			}
			if _, err2 := h.drain(false); err2 != err {
				t.Errorf("a later drain returned %v, want the same damage", err2)
			}
			if v := r.Counter("tapes.shm.damaged").Value(); v != 1 {
				t.Errorf("damaged = %d, want 1", v)
			}
		})
	}
}

// A worker claiming a FREE slot that someone scribbled on (indices,
// counters, definition count, committed-looking records in the ring) loses
// nothing: it scrubs the slot before use.
func TestScribbledFreeSlot(t *testing.T) {
	h := newHost(t, Config{Slots: 1, RingRecords: 64, MaxMetrics: 4})
	r := h.Registry()
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	base := h.g.SlotOff(0)
	for off, v := range map[int]uint64{slotStart: 99, slotReserve: 1000, slotDropped: 123, slotDefCount: 3,
		slotConsumer: 7, slotTaking: 9, 16: 5, 96: 5} {
		atomic.StoreUint64(u64(h.m, base+off), v)
	}
	for i := 0; i < 64; i++ {
		wire.IntRecord(uint32(i%3), wire.KindCounter, 1000).Put(h.m[base+h.g.RingOffset+i*wire.RecordSize:])
	}
	writeDefAt(h.m[base+h.g.DefOffset:], wire.KindCounter, "scribbled.a")
	c, err := Open(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctr := c.Counter("n")
	const total = 50000
	for sent := 0; sent < total; sent += 40 {
		for i := 0; i < 40; i++ {
			ctr.Inc()
		}
		if _, err := h.DrainOnce(); err != nil {
			t.Fatal(err)
		}
	}
	got := counters(r, "malformed", "dropped.all")
	if v := r.Counter("n").Value(); v != total || c.Dropped() != 0 || got["malformed"] != 0 || got["dropped.all"] != 0 {
		t.Errorf("n = %d of %d (dropped %d), host counts %v", v, total, c.Dropped(), got)
	}
	if _, ok := r.Get("scribbled.a"); ok {
		t.Errorf("a scribbled definition reached the registry")
	}
}

func writeDefAt(e []byte, k wire.Kind, name string) {
	clear(e[:layout.DefSize])
	e[defKind], e[defNameLen] = byte(k), byte(len(name))
	copy(e[defName:], name)
}

// The host's dropped counters saturate: a worker scribbling huge dropped
// counts never makes dropped.all wrap negative.
func TestDroppedSaturates(t *testing.T) {
	h, r, c := hostile(t)
	c.Counter("x").Inc()
	for _, d := range []uint64{5e18, 1e19, 1.5e19, math.MaxUint64} {
		atomic.StoreUint64(c.dropped, d)
		if _, err := h.DrainOnce(); err != nil {
			t.Fatal(err)
		}
		if v := r.Counter("tapes.shm.dropped.all").Value(); v < 0 {
			t.Fatalf("dropped.all wrapped to %d after a scribbled %d", v, d)
		}
	}
	if v := r.Counter("tapes.shm.dropped.all").Value(); v != math.MaxInt64 {
		t.Errorf("dropped.all = %d, want saturated at %d", v, int64(math.MaxInt64))
	}
	if v := r.Counter(fmt.Sprintf("tapes.shm.dropped.pid-%d", os.Getpid())).Value(); v != math.MaxInt64 {
		t.Errorf("dropped.pid = %d, want saturated", v)
	}
}

// Workers churning gauge names (per-worker and combined) leave nothing
// behind in the host once they are gone: heap and aggregates stay bounded.
func TestGaugeChurnBounded(t *testing.T) {
	h := newHost(t, Config{Slots: 2, RingRecords: 16, MaxMetrics: 128})
	r := h.Registry()
	round := func(k int) {
		c, err := Open(h.Path())
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 100; i++ {
			mode := shm.GaugePerWorker
			if i%2 == 1 {
				mode = shm.GaugeSum
			}
			g, err := c.GetGauge(fmt.Sprintf("churn.r%d.g%d", k, i), mode, nil)
			if err != nil {
				t.Fatal(err)
			}
			g.Set(float64(i))
		}
		if _, err := h.DrainOnce(); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if _, err := h.DrainOnce(); err != nil {
			t.Fatal(err)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for k := 0; k < 20; k++ {
		round(k)
	}
	before, base := heap(), r.Len()
	for k := 20; k < 420; k++ { // 40,000 distinct names
		round(k)
	}
	after := heap()
	t.Logf("heap %d -> %d bytes over 40,000 gauge names", before, after)
	if len(h.aggs) != 0 || r.Len() != base {
		t.Errorf("%d aggregates and %d metrics (was %d) left after the workers left", len(h.aggs), r.Len(), base)
	}
	// ~440 B per name leaked before: 17 MB here.
	if after > before+4<<20 {
		t.Errorf("host heap grew by %d bytes over 40,000 churned gauge names", after-before)
	}
}

// Names under "tapes." are the host's: the client refuses them, and the
// host refuses (and counts) such definitions written by any other client.
func TestReservedNamesRefused(t *testing.T) {
	h := newHost(t, Config{Slots: 2, RingRecords: 16, MaxMetrics: 8, Prefix: "tapes.host.shm"})
	r := h.Registry()
	c, err := Open(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, name := range []string{"tapes", "tapes.x", "tapes.host.shm.dropped.all"} {
		if _, err := c.Define(wire.KindCounter, name); !errors.Is(err, shm.ErrReservedName) {
			t.Errorf("Define(%q): %v, want shm.ErrReservedName", name, err)
		}
	}
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	names := []string{"tapes.host.shm.dropped.all", "tapes.other", "tapes", "fine"}
	for i, n := range names {
		writeDef(c, i, wire.KindCounter, 0, n)
	}
	atomic.StoreUint64(c.defCount, uint64(len(names)))
	for i := range names {
		c.rawRecord(t, rec(uint32(i), wire.KindCounter, 1000))
	}
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if v := r.Counter("tapes.host.shm.dropped.all").Value(); v != 0 {
		t.Errorf("a worker added %d into the host's dropped.all", v)
	}
	if _, ok := r.Get("tapes.other"); ok {
		t.Errorf("a worker defined tapes.other")
	}
	if v := r.Counter("tapes.host.shm.rejected").Value(); v != 3 {
		t.Errorf("rejected = %d, want 3", v)
	}
	if v := r.Counter("fine").Value(); v != 1000 {
		t.Errorf("fine = %d, want 1000", v)
	}
}

// A file other users may write: a worker refuses it, a host repairs it
// (at attach and while it runs) and says so.
func TestWorldWritableFile(t *testing.T) {
	path, _ := validFile(t)
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); !errors.Is(err, ErrBadPerm) || !strings.Contains(err.Error(), "0666") {
		t.Errorf("Open of a 0666 file: %v, want ErrBadPerm naming the mode", err)
	}
	var logb strings.Builder
	h, err := Create(path, Config{Logger: slog.New(slog.NewTextHandler(&logb, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mode := func() os.FileMode {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	if m := mode(); m != 0o600 {
		t.Errorf("mode after attach %v, want 0600", m)
	}
	r := h.Registry()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 0o600 {
		t.Errorf("mode after a drain %v, want 0600", m)
	}
	if v := r.Counter("tapes.shm.repaired").Value(); v != 2 {
		t.Errorf("repaired = %d, want 2", v)
	}
	if n := strings.Count(logb.String(), "accessible to other users"); n != 2 {
		t.Errorf("%d warnings logged, want 2:\n%s", n, logb.String())
	}
	if c, err := Open(path); err != nil {
		t.Errorf("Open after the repair: %v", err)
	} else {
		c.Close()
	}
}

// A scribbled header would make every new worker refuse the file: the host
// restores it, counts and logs it.
func TestHeaderScribbleRepaired(t *testing.T) {
	var logb strings.Builder
	h, err := Create(tempPath(t), Config{Slots: 2, RingRecords: 16, Logger: slog.New(slog.NewTextHandler(&logb, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r := h.Registry()
	h.m[layout.HdrSlots] = 77
	h.m[layout.HdrMagic] = 'X'
	atomic.StoreUint32(u32(h.m, hdrWaitZero), 5)
	if _, err := Open(h.Path()); err == nil {
		t.Fatal("Open accepted a scribbled header")
	}
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if v := r.Counter("tapes.shm.repaired").Value(); v != 1 || !strings.Contains(logb.String(), "header was overwritten") {
		t.Errorf("repaired = %d, log %q", v, logb.String())
	}
	c, err := Open(h.Path())
	if err != nil {
		t.Fatalf("Open after the repair: %v", err)
	}
	c.Close()
}

// Workers that find every slot taken wait, wake the host, and get a slot
// as soon as a worker closes; one that gives up is counted.
func TestNoSlotWaitsAndCounts(t *testing.T) {
	h := newHost(t, Config{Slots: 1, RingRecords: 16})
	r := h.Registry()
	a, err := Open(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(h.Path(), shm.WithSlotWait(0)); !errors.Is(err, shm.ErrNoSlot) {
		t.Fatalf("Open with every slot taken: %v", err)
	}
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if v := r.Counter("tapes.shm.refused").Value(); v != 1 {
		t.Errorf("refused = %d, want 1", v)
	}
	// A waiting worker gets the slot once a draining host frees it.
	go testDrain(h, t.Context(), WithLivenessInterval(time.Hour))
	go func() {
		time.Sleep(20 * time.Millisecond)
		a.Close()
	}()
	b, err := Open(h.Path(), shm.WithSlotWait(10*time.Second))
	if err != nil {
		t.Fatalf("Open waiting for a slot: %v", err)
	}
	b.Close()
}

func init() {
	roles["nofdHost"] = roleNoFDHost
	roles["holder"] = roleHolder
}

// roleNoFDHost drains with every file descriptor taken, so /proc cannot be
// read; it prints its counters on SIGTERM.
func roleNoFDHost() int {
	h, err := Create(os.Getenv("SHM_PATH"), Config{Slots: 2, RingRecords: 16})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	lim := syscall.Rlimit{Cur: 64, Max: 64}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Println("error", err)
		return 1
	}
	var held []*os.File
	for {
		f, err := os.Open("/dev/null")
		if err != nil {
			break
		}
		held = append(held, f)
	}
	_, _, perr := procStart(os.Getpid())
	fmt.Println("ready", errors.Is(perr, syscall.EMFILE))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	r := h.Registry()
	if err := testDrain(h, ctx, WithLivenessInterval(20*time.Millisecond)); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("unknown", r.Counter("tapes.shm.liveness_unknown").Value(), "reclaimed", r.Counter("tapes.shm.reclaimed").Value())
	runtime.KeepAlive(held)
	return 0
}

// roleHolder claims a slot and waits to be killed.
func roleHolder() int {
	c, err := Open(os.Getenv("SHM_PATH"))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	c.Counter("held").Inc()
	fmt.Println("ok")
	select {}
}

// With every descriptor of the host taken (so no /proc read succeeds), a
// SIGKILLed and reaped worker's slot is still reclaimed: an unreadable
// /proc is "unknown", counted and asked again, never "alive forever".
func TestLivenessWithoutDescriptors(t *testing.T) {
	path := tempPath(t)
	host := child(t, "nofdHost", "SHM_PATH="+path)
	out, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	defer host.Process.Kill()
	hr := bufio.NewReader(out)
	expectLine(t, hr, "ready true")
	w := child(t, "holder", "SHM_PATH="+path)
	wout, err := w.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	expectLine(t, bufio.NewReader(wout), "ok")
	w.Process.Kill()
	w.Wait() // reaped: the pid is gone
	waitFor(t, "the killed worker's slot to be reclaimed", 10*time.Second, func() bool {
		rep, err := shm.Inspect(path)
		return err == nil && len(rep.Workers) == 0
	})
	host.Process.Signal(syscall.SIGTERM)
	line, _ := hr.ReadString('\n')
	var unknown, reclaimed int
	if _, err := fmt.Sscanf(line, "unknown %d reclaimed %d", &unknown, &reclaimed); err != nil || unknown == 0 || reclaimed != 1 {
		t.Errorf("host reported %q (%v); want unknown > 0 and reclaimed 1", line, err)
	}
	host.Wait()
}

// A sealed memfd: workers attach through its /proc path, and the kernel
// refuses to shrink or grow it, whoever asks.
func TestMemfdSealed(t *testing.T) {
	h, err := CreateMemfd(Config{Slots: 2, RingRecords: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := Open(h.Path())
	if err != nil {
		t.Fatalf("Open(%s): %v", h.Path(), err)
	}
	defer c.Close()
	c.Counter("m").Add(3)
	f, err := os.OpenFile(h.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, size := range []int64{0, int64(h.g.FileSize) - 1, int64(h.g.FileSize) + 4096} {
		if err := f.Truncate(size); !errors.Is(err, syscall.EPERM) {
			t.Errorf("truncate to %d: %v, want EPERM", size, err)
		}
	}
	r := h.Registry()
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if v := r.Counter("m").Value(); v != 3 {
		t.Errorf("m = %d, want 3", v)
	}
	if fi, err := f.Stat(); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("memfd mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

// A live worker in the middle of its scrub keeps its claim: the host judges
// a CLAIMING slot by pid alone, since its startTime is still what the FREE
// slot held (scribbled here) until the worker writes its own.
func TestClaimingSlotJudgedByPid(t *testing.T) {
	h := newHost(t, Config{Slots: 1, RingRecords: 64, MaxMetrics: 4})
	base := h.g.SlotOff(0)
	atomic.StoreUint64(u64(h.m, base+slotStart), 99)
	w := packState(uint32(os.Getpid()), 1, layout.StateClaiming)
	atomic.StoreUint64(u64(h.m, base+slotState), w)
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if got := atomic.LoadUint64(u64(h.m, base+slotState)); got != w {
		_, _, st := unpackState(got)
		t.Fatalf("a live worker's CLAIMING slot became state %d", st)
	}
}
