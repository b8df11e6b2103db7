package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/host"
	_ "github.com/tapes-go/tapes/shm/relay" // the host's waits as tapes-host makes them
)

// shmHost creates a host on a file in /dev/shm (tmpfs, where DefaultPath
// puts it in production): a shared mapping of a disk file would add block
// allocation and write-back to every page fault.
func shmHost(b *testing.B, cfg host.Config) *host.Host {
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "tapes-shm-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o700)
	h, err := host.Create(filepath.Join(dir, "b.shm"), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return h
}

// BenchmarkShmRecord is a worker's record path alone: one event (counter
// and timer alternating) into its own ring. The ring is drained between
// batches with the timer stopped, so no event is dropped and the host's
// cache-line traffic is not counted.
func BenchmarkShmRecord(b *testing.B) {
	const ring = 1 << 16
	h := shmHost(b, host.Config{Slots: 2, RingRecords: ring})
	c, err := shm.Open(h.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctr := c.Counter("bench.count")
	tmr := c.Timer("bench.time")
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(ring, b.N-done)
		for i := 0; i < n; i++ {
			if i&1 == 0 {
				ctr.Inc()
			} else {
				tmr.Update(time.Duration(i))
			}
		}
		done += n
		b.StopTimer()
		if _, err := h.DrainOnce(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	if c.Dropped() != 0 {
		b.Fatalf("dropped %d", c.Dropped())
	}
}

// BenchmarkShmRecordWithHost is the record path while a host drains the
// same ring on the other core: the producer then shares cache lines with
// the consumer, and when it outruns the host, events are dropped (counted,
// reported as dropped/op). Dropping is the cheaper path.
func BenchmarkShmRecordWithHost(b *testing.B) {
	h := shmHost(b, host.Config{Slots: 2, RingRecords: 1 << 16})
	c, err := shm.Open(h.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.Drain(ctx) }()
	ctr := c.Counter("bench.count")
	tmr := c.Timer("bench.time")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i&1 == 0 {
			ctr.Inc()
		} else {
			tmr.Update(time.Duration(i))
		}
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	b.ReportMetric(float64(c.Dropped())/float64(b.N), "dropped/op")
}

// BenchmarkShmDrain is the host applying a counter and timer mix: per op,
// one event decoded, applied to the registry and its record zeroed.
func BenchmarkShmDrain(b *testing.B) {
	drainBench(b, func(c *shm.Client) func(i int) {
		ctr, tmr := c.Counter("bench.count"), c.Timer("bench.time")
		return func(i int) {
			if i&1 == 0 {
				ctr.Inc()
			} else {
				tmr.Update(time.Duration(1000 + i))
			}
		}
	})
}

// BenchmarkShmDrainMix is BenchmarkShmDrain with a worker's usual mix: two
// counters, two timers and a histogram, interleaved record by record.
func BenchmarkShmDrainMix(b *testing.B) {
	drainBench(b, func(c *shm.Client) func(i int) {
		c1, c2 := c.Counter("bench.c1"), c.Counter("bench.c2")
		t1, t2 := c.Timer("bench.t1"), c.Timer("bench.t2")
		hg := c.Histogram("bench.h")
		return func(i int) {
			switch i % 5 {
			case 0:
				c1.Inc()
			case 1:
				t1.Update(time.Duration(1000 + i))
			case 2:
				c2.Add(2)
			case 3:
				t2.Update(time.Duration(5000 + i))
			default:
				hg.Update(float64(i))
			}
		}
	})
}

// drainBench times DrainOnce over rings that record(i) filled, untimed,
// one event per op.
func drainBench(b *testing.B, define func(c *shm.Client) (record func(i int))) {
	const ring = 1 << 16
	h := shmHost(b, host.Config{Slots: 2, RingRecords: ring})
	c, err := shm.Open(h.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	record := define(c)
	if _, err := h.DrainOnce(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		n := min(ring, b.N-done)
		for i := 0; i < n; i++ {
			record(i)
		}
		b.StartTimer()
		got, err := h.DrainOnce()
		if err != nil || got != n {
			b.Fatalf("drained %d of %d: %v", got, n, err)
		}
		done += n
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mevents/s")
}

// BenchmarkShmDrainCrossCore is BenchmarkShmDrain with the ring filled by
// another goroutine, usually on the other core, as a worker process would:
// the host then fetches every record's cache line from the other core.
func BenchmarkShmDrainCrossCore(b *testing.B) {
	const ring = 1 << 16
	h := shmHost(b, host.Config{Slots: 2, RingRecords: ring})
	c, err := shm.Open(h.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctr := c.Counter("bench.count")
	tmr := c.Timer("bench.time")
	if _, err := h.DrainOnce(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		n := min(ring, b.N-done)
		filled := make(chan struct{})
		go func() {
			defer close(filled)
			for i := 0; i < n; i++ {
				if i&1 == 0 {
					ctr.Inc()
				} else {
					tmr.Update(time.Duration(1000 + i))
				}
			}
		}()
		<-filled
		b.StartTimer()
		got, err := h.DrainOnce()
		if err != nil || got != n {
			b.Fatalf("drained %d of %d: %v", got, n, err)
		}
		done += n
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mevents/s")
}

// BenchmarkShmIdleHost measures what an idle host costs: the CPU share of
// a host process (shmload -transport idle-host) draining a file with four
// attached but silent workers, over 1 s per op. A process of its own,
// because this one may still be running what earlier benchmarks left
// behind (a registry's coarse clock ticks for 10 s after its last read),
// which made the figure 0.2-0.4% or 3% depending on benchmark order.
func BenchmarkShmIdleHost(b *testing.B) {
	h := shmHost(b, host.Config{Slots: 8})
	path := h.Path()
	h.Close() // the host under test is a process of its own (shmload)
	for i := 0; i < 4; i++ {
		c, err := shm.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		c.Counter("idle.count")
		defer c.Close()
	}
	var sum float64
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(shmload(b), "-transport", "idle-host", "-idle", "1s")
		cmd.Env = append(os.Environ(), shm.EnvVar+"="+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("idle host: %v\n%s", err, out)
		}
		var pct float64
		if _, err := fmt.Sscanf(string(out), "cpu-%% %f", &pct); err != nil {
			b.Fatalf("idle host printed %q", out)
		}
		sum += pct
	}
	b.ReportMetric(sum/float64(b.N), "cpu-%")
}

// BenchmarkShmLatency measures how long an event recorded after a quiet
// period (2-20 ms) takes to show in the host's registry: /quiet with no
// other worker (the host asleep in its futex), /load while a process of 200
// clients records 100 events/s each (the host coalescing its passes), and
// /load-window-1ms and -2ms the same with host.Config.CoalesceWindow
// shorter and longer than its default 1.5 ms (the CPU side of that trade
// is shmhostcpu's, tapes-host -shm-window). One op = 50 events; reported
// as percentiles.
func BenchmarkShmLatency(b *testing.B) {
	b.Run("quiet", func(b *testing.B) { benchLatency(b, 0, 0) })
	b.Run("load", func(b *testing.B) { benchLatency(b, 200, 0) })
	b.Run("load-window-1ms", func(b *testing.B) { benchLatency(b, 200, time.Millisecond) })
	b.Run("load-window-2ms", func(b *testing.B) { benchLatency(b, 200, 2*time.Millisecond) })
}

func benchLatency(b *testing.B, load int, window time.Duration) {
	h := shmHost(b, host.Config{Slots: load + 2, CoalesceWindow: window})
	if load > 0 {
		cmd := exec.Command(shmload(b), "-transport", "hold", "-clients", strconv.Itoa(load))
		cmd.Env = append(os.Environ(), shm.EnvVar+"="+h.Path())
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
			b.Fatalf("load process said %q (%v)", line, err)
		}
	}
	c, err := shm.Open(h.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	r := h.Registry()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.Drain(ctx) }()
	ctr := c.Counter("lat.count")
	var lat []time.Duration
	rc := r.Counter("lat.count")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < 50; j++ {
			// A quiet period slept in the kernel, not on a Go timer: this
			// process's timers fire when its netpoller wakes, and the
			// host's own wake-ups (the end of a coalescing window) woke it,
			// so every event was recorded just after a pass and waited a
			// whole window (p50 1.05 ms against ~0.5 ms from a worker whose
			// clock is its own, as every worker process's is).
			// The pauses spread over a millisecond's phases as well: the
			// host's windows tick at a period, and pauses of whole
			// milliseconds landed every event at the same phase of a
			// 1 or 2 ms window (p50 1.8 ms with 2 ms windows, where events
			// at random times wait half a window).
			quietPause(time.Duration(2+(j*7)%19)*time.Millisecond + time.Duration((i*50+j)*7919%1000)*time.Microsecond)
			want := rc.Value() + 1
			t0 := time.Now()
			ctr.Inc()
			// Poll by sleeping, not by spinning: a goroutine spinning on
			// Gosched holds one of this process's Ps (two on the project's
			// machine) and delayed the host's goroutine by ~1 ms (p50
			// 1.1-1.7 ms against 59 µs), which no separate worker process
			// does. pollPause sleeps in the kernel (20 µs asked, ~60-100
			// µs taken here), the resolution of these figures.
			for rc.Value() < want {
				pollPause()
			}
			lat = append(lat, time.Since(t0))
		}
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}
