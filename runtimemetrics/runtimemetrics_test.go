package runtimemetrics

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
)

func value(t *testing.T, r *registry.Registry, name string) float64 {
	t.Helper()
	m, ok := r.Get(name)
	if !ok {
		t.Fatalf("%s not registered", name)
	}
	switch x := m.(type) {
	case *registry.Gauge:
		return x.Value()
	case *registry.Counter:
		return float64(x.Value())
	case *registry.Timer:
		return float64(x.Count())
	}
	t.Fatalf("%s is a %v", name, m.Kind())
	return 0
}

func TestGaugesFollowTheRuntime(t *testing.T) {
	r := registry.New()
	s, err := Register(r, "rt", Options{Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	before := value(t, r, "rt.go.goroutines")
	stop := make(chan struct{})
	for range 50 {
		go func() { <-stop }()
	}
	if after := value(t, r, "rt.go.goroutines"); after < before+50 {
		t.Errorf("goroutines %v after starting 50 more than %v", after, before)
	}
	close(stop)

	fds := value(t, r, "rt.process.open_fds")
	var files []*os.File
	for i := range 20 {
		f, err := os.Create(filepath.Join(t.TempDir(), strings.Repeat("f", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if got := value(t, r, "rt.process.open_fds"); got != fds+20 {
		t.Errorf("open_fds %v after opening 20 files, was %v", got, fds)
	}
	for _, f := range files {
		f.Close()
	}

	heap := value(t, r, "rt.go.memory.heap_objects_bytes")
	keep := make([][]byte, 0, 64)
	for range 64 {
		keep = append(keep, make([]byte, 1<<20))
	}
	if got := value(t, r, "rt.go.memory.heap_objects_bytes"); got < heap+60<<20 {
		t.Errorf("heap objects %v bytes after allocating 64 MiB, was %v", got, heap)
	}
	if rss := value(t, r, "rt.process.resident_bytes"); rss < 1<<20 {
		t.Errorf("resident_bytes = %v", rss)
	}
	runtime.KeepAlive(keep)
	if th := value(t, r, "rt.go.threads"); th < 1 {
		t.Errorf("threads = %v", th)
	}
	// The boot time in /proc/stat is in whole seconds: the start time can
	// read up to 1 s late.
	now := float64(time.Now().UnixNano()) / 1e9
	if st := value(t, r, "rt.process.start_time_seconds"); st > now+1 || st < now-24*3600*365 {
		t.Errorf("start_time_seconds = %v, now %v", st, now)
	}
}

func TestCountersAndPausesFollowGC(t *testing.T) {
	r := registry.New()
	s, err := Register(r, "rt", Options{Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	cycles := value(t, r, "rt.go.gc.cycles")
	if cycles < 0 {
		t.Fatal(cycles)
	}
	pauses := value(t, r, "rt.go.gc.pauses")
	if pauses != 0 {
		t.Errorf("gc.pauses count %v at Register, want 0 (pauses are recorded from Register on)", pauses)
	}
	allocated := value(t, r, "rt.go.memory.allocated_bytes")
	for range 5 {
		runtime.GC()
	}
	s.sample(false)
	if got := value(t, r, "rt.go.gc.cycles"); got < cycles+5 {
		t.Errorf("gc.cycles %v after 5 runtime.GC, was %v", got, cycles)
	}
	// Each GC cycle stops the world twice.
	if got := value(t, r, "rt.go.gc.pauses"); got < 10 {
		t.Errorf("gc.pauses count %v after 5 GC cycles, want >= 10", got)
	}
	m, _ := r.Get("rt.go.gc.pauses")
	if max := m.(*registry.Timer).Snapshot().Max; max <= 0 || max > 10 {
		t.Errorf("gc.pauses max %v s", max)
	}
	if got := value(t, r, "rt.go.memory.allocated_bytes"); got <= allocated {
		t.Errorf("allocated_bytes %v, was %v", got, allocated)
	}
}

func TestSamplerRunsOnItsInterval(t *testing.T) {
	r := registry.New()
	s, err := Register(r, "rt", Options{Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cycles := value(t, r, "rt.go.gc.cycles")
	runtime.GC()
	deadline := time.Now().Add(20 * time.Second)
	for value(t, r, "rt.go.gc.cycles") <= cycles {
		if time.Now().After(deadline) {
			t.Fatal("gc.cycles never caught up with runtime.GC")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Stop()
	s.Stop() // idempotent
}

func TestConflictRegistersNothing(t *testing.T) {
	r := registry.New()
	r.Counter("rt.go.threads")
	if _, err := Register(r, "rt", Options{}); err == nil || !strings.Contains(err.Error(), "rt.go.threads") {
		t.Fatalf("Register over a counter named like a gauge: %v", err)
	}
	if r.Len() != 1 {
		t.Errorf("a failed Register left %d metrics, want 1", r.Len())
	}
	if _, err := Register(r, "bad..prefix", Options{}); err == nil {
		t.Error("invalid prefix accepted")
	}
}

func TestEncodeVersion(t *testing.T) {
	for in, want := range map[string]float64{
		"v1.4.2": 1004002, "1.26.8": 1026008, "1.26": 1026000, "v0.3.0-rc.1": 3000,
		"v0.0.0-20261201000000-abcdefabcdef": 0, "(devel)": 0, "v1.1000.0": 0, "": 0, "v1": 0,
	} {
		if got := EncodeVersion(in); got != want {
			t.Errorf("EncodeVersion(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestBuildInfo(t *testing.T) {
	r := registry.New()
	if err := RegisterBuildInfo(r, "app.build"); err != nil {
		t.Fatal(err)
	}
	if v := value(t, r, "app.build.info"); v != 1 {
		t.Errorf("info = %v", v)
	}
	want := EncodeVersion(strings.TrimPrefix(runtime.Version(), "go"))
	if v := value(t, r, "app.build.go_version"); v != want || v < 1e6 {
		t.Errorf("go_version = %v, want %v (%s)", v, want, runtime.Version())
	}
}
