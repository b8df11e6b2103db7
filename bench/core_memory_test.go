package bench

// Heap per timer and histogram, tapes next to its peers, measured as the
// runtime heap after GC (runtime.ReadMemStats), not as what each library
// says it holds. docs/core.md holds the table and the command.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/client_golang/prometheus"
	gometrics "github.com/rcrowley/go-metrics"

	"github.com/tapes-go/tapes/registry"
)

// memLib makes n recorders of one library; rec records seconds into
// recorder i; done is called before the heap is measured.
type memLib struct {
	name string
	make func(n int, hist bool) (rec func(i int, v float64), done func())
}

func memLibs() []memLib {
	return []memLib{
		{"tapes", func(n int, hist bool) (func(int, float64), func()) {
			r := registry.New()
			if hist {
				hs := make([]*registry.Histogram, n)
				for i := range hs {
					hs[i] = r.Histogram(fmt.Sprintf("h%d", i))
				}
				return func(i int, v float64) { hs[i].Update(v) }, func() { hs[0].Count() }
			}
			ts := make([]*registry.Timer, n)
			for i := range ts {
				ts[i] = r.Timer(fmt.Sprintf("t%d", i))
			}
			return func(i int, v float64) { ts[i].Update(time.Duration(v * 1e9)) },
				func() { ts[0].Count() } // applies what the per-P rings hold
		}},
		{"prometheus-native", func(n int, _ bool) (func(int, float64), func()) {
			hs := make([]prometheus.Histogram, n)
			for i := range hs {
				hs[i] = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", NativeHistogramBucketFactor: 1.01})
			}
			return func(i int, v float64) { hs[i].Observe(v) }, func() {}
		}},
		{"victoria", func(n int, _ bool) (func(int, float64), func()) {
			s := vm.NewSet()
			hs := make([]*vm.Histogram, n)
			for i := range hs {
				hs[i] = s.NewHistogram(fmt.Sprintf("h%d", i))
			}
			return func(i int, v float64) { hs[i].Update(v) }, func() {}
		}},
		{"prometheus-classic", func(n int, _ bool) (func(int, float64), func()) {
			hs := make([]prometheus.Histogram, n)
			for i := range hs {
				hs[i] = corePromHistogram()
			}
			return func(i int, v float64) { hs[i].Observe(v) }, func() {}
		}},
	}
}

// memWorkload feeds recorder i from goroutine g of procs; values are in
// seconds.
type memWorkload struct {
	name string
	n    int  // recorders
	hist bool // histograms of any value, not timers
	feed func(rec func(int, float64), n, g, procs int)
}

var memWorkloads = []memWorkload{
	// spiky: 24 values, one per octave 1 µs .. 8 s, into every timer,
	// from every P.
	{"spiky", 1000, false, func(rec func(int, float64), n, g, procs int) {
		for i := range n {
			for o := range 24 {
				rec(i, math.Ldexp(1e-6, o))
			}
		}
	}},
	// dense: 50,000 log-normal latencies per timer (median 2 ms, sigma
	// 1.5), shared among the Ps.
	{"dense", 200, false, func(rec func(int, float64), n, g, procs int) {
		rng := rand.New(rand.NewPCG(uint64(g), 7))
		for i := range n {
			for range 50_000 / procs {
				rec(i, 2e-3*math.Exp(1.5*rng.NormFloat64()))
			}
		}
	}},
	// extremes: ±1e-19 .. ±1e19, one value per octave, from one P.
	// Histograms: a timer ignores negative durations.
	{"extremes", 1000, true, func(rec func(int, float64), n, g, procs int) {
		if g != 0 {
			return
		}
		for i := range n {
			for v := 1e-19; v < 1e19; v *= 2 {
				rec(i, v)
				rec(i, -v)
			}
		}
	}},
}

func heapNow() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// memMeasure builds one workload's recorders for one library at procs and
// returns the heap it holds per recorder, in bytes.
func memMeasure(lib memLib, w memWorkload, procs int) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	before := heapNow()
	rec, done := lib.make(w.n, w.hist)
	var wg sync.WaitGroup
	for g := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.feed(rec, w.n, g, procs)
		}()
	}
	wg.Wait()
	done()
	after := heapNow()
	runtime.KeepAlive(rec)
	return float64(after-before) / float64(w.n)
}

// warmRings lets every P create its tapes ring (6 KiB per P, per process,
// whatever the number of timers) before anything is measured, so that the
// figures are per timer.
func warmRings(procs int) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	t := registry.New().Timer("warm")
	var wg sync.WaitGroup
	for range 4 * procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				t.Update(time.Millisecond)
				runtime.Gosched()
			}
		}()
	}
	wg.Wait()
	t.Count()
}

// BenchmarkHeapPerTimer reports KiB/timer (heap after GC, per recorder) for
// each workload, GOMAXPROCS and library. Run with -benchtime 1x: one op
// builds the whole workload.
func BenchmarkHeapPerTimer(b *testing.B) {
	for _, w := range memWorkloads {
		for _, procs := range []int{1, 64} {
			warmRings(procs)
			for _, lib := range memLibs() {
				if w.name == "extremes" && lib.name == "prometheus-classic" {
					continue // fixed buckets: nothing to measure
				}
				b.Run(fmt.Sprintf("%s/procs=%d/lib=%s", w.name, procs, lib.name), func(b *testing.B) {
					sum := 0.0
					for b.Loop() {
						sum += memMeasure(lib, w, procs)
					}
					b.ReportMetric(sum/float64(b.N)/1024, "KiB/timer")
				})
			}
		}
	}
	b.Run("spiky/procs=1/lib=gometrics", func(b *testing.B) {
		lib := memLib{"gometrics", func(n int, _ bool) (func(int, float64), func()) {
			ts := make([]gometrics.Timer, n)
			for i := range ts {
				ts[i] = gometrics.NewTimer()
			}
			return func(i int, v float64) { ts[i].Update(time.Duration(v * 1e9)) },
				func() {
					for _, t := range ts {
						t.Stop()
					}
				}
		}}
		sum := 0.0
		for b.Loop() {
			sum += memMeasure(lib, memWorkloads[0], 1)
		}
		b.ReportMetric(sum/float64(b.N)/1024, "KiB/timer")
	})
}

// TestHeapPerTimerTargets asserts the memory targets for tapes,
// measured like BenchmarkHeapPerTimer: spiky <= 6 KiB at GOMAXPROCS 1 and
// <= 12 KiB at 64, dense <= 16 / 24 KiB, extremes <= 16 KiB.
func TestHeapPerTimerTargets(t *testing.T) {
	targets := map[string][2]float64{"spiky": {6, 12}, "dense": {16, 24}, "extremes": {16, 16}}
	lib := memLibs()[0]
	for _, w := range memWorkloads {
		w.n /= 4 // the heap per timer does not depend on it; the test stays short
		for k, procs := range []int{1, 64} {
			warmRings(procs)
			kib := memMeasure(lib, w, procs) / 1024
			t.Logf("%s at GOMAXPROCS %d: %.2f KiB/timer (target %.0f)", w.name, procs, kib, targets[w.name][k])
			if kib > targets[w.name][k] {
				t.Errorf("%s at GOMAXPROCS %d: %.2f KiB/timer, target %.0f", w.name, procs, kib, targets[w.name][k])
			}
		}
	}
}

// BenchmarkTimerUpdateContended: GOMAXPROCS(64) goroutines on one timer
// (simulated on however many cores there are). Reports the cost per
// update and what the timer holds afterwards.
func BenchmarkTimerUpdateContended(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(64))
	tt := registry.New().Timer("t")
	ph := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", NativeHistogramBucketFactor: 1.01})
	vh := vm.NewSet().NewHistogram("t")
	cases := []struct {
		lib string
		f   func(d time.Duration)
	}{
		{"tapes", tt.Update},
		{"prometheus-native", func(d time.Duration) { ph.Observe(d.Seconds()) }},
		{"victoria", func(d time.Duration) { vh.Update(d.Seconds()) }},
	}
	for _, c := range cases {
		b.Run("lib="+c.lib, func(b *testing.B) {
			corePar(b, func(i int) { c.f(coreLatencies[i&1023]) })
			if c.lib == "tapes" {
				b.ReportMetric(float64(tt.Histogram().Bytes())/1024, "KiB/timer")
				b.ReportMetric(float64(tt.Histogram().Cells()), "cells")
			}
		})
	}
}

// BenchmarkScrape10kTimers reads every value a reporter needs from 10,000
// timers that each saw 200 log-normal latencies: one op is the whole
// scrape.
func BenchmarkScrape10kTimers(b *testing.B) {
	const n = 10_000
	r := registry.New()
	gr := gometrics.NewRegistry()
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range n {
		tt := r.Timer(fmt.Sprintf("svc.e%d.latency", i))
		gt := gometrics.GetOrRegisterTimer(fmt.Sprintf("svc.e%d.latency", i), gr)
		for range 200 {
			d := time.Duration(2e6 * math.Exp(1.5*rng.NormFloat64()))
			tt.Update(d)
			gt.Update(d)
		}
	}
	defer gr.UnregisterAll()
	var sink float64
	b.Run("lib=tapes", func(b *testing.B) {
		coreSeq(b, func(int) {
			r.Each(func(_ string, m registry.Metric) {
				s := m.(*registry.Timer).Snapshot()
				sink += s.Quantiles[5] + s.Rates.M1
			})
		})
	})
	qs := registry.Quantiles[:]
	b.Run("lib=gometrics", func(b *testing.B) {
		coreSeq(b, func(int) {
			gr.Each(func(_ string, m any) {
				s := m.(gometrics.Timer).Snapshot()
				sink += s.Percentiles(qs)[5] + s.Rate1()
			})
		})
	})
	_ = sink
}
