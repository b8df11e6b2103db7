package bench

// Side-by-side benchmarks of the core record and read paths: tapes against
// rcrowley/go-metrics, prometheus/client_golang and VictoriaMetrics/metrics,
// in one run so that the numbers share a machine state. docs/core.md holds the
// benchstat table and the command that produced it.
//
// Sub-benchmark names put the library last (BenchmarkX/lib) so that
// benchstat -col /lib lays libraries out as columns.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/client_golang/prometheus"
	gometrics "github.com/rcrowley/go-metrics"

	"github.com/tapes-go/tapes/bench/internal/proc"
	"github.com/tapes-go/tapes/registry"
)

// coreLatencies are log-normal durations around 1 ms, the same for every
// library, so that histogram paths touch many buckets as real traffic does.
var coreLatencies = func() [1024]time.Duration {
	var d [1024]time.Duration
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range d {
		d[i] = time.Duration(math.Exp(rng.NormFloat64()*1.5) * float64(time.Millisecond))
	}
	return d
}()

func corePromHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: prometheus.DefBuckets})
}

func corePromSummary() prometheus.Summary {
	return prometheus.NewSummary(prometheus.SummaryOpts{
		Name:       "s",
		Objectives: map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.99: 0.001},
	})
}

// coreCPUNanos is the CPU time this process has used. The machine these
// benchmarks run on is shared, and when other processes take the cores
// ns/op (wall time) counts their time too; cpu-ns/op, the process CPU time
// per operation, does not. For RunParallel with -cpu 2 it is the cost of one
// operation on one core (ns/op is then about half of it when both cores are
// ours).
func coreCPUNanos() int64 { return int64(proc.CPU()) }

func coreReportCPU(b *testing.B, start int64) {
	b.ReportMetric(float64(coreCPUNanos()-start)/float64(b.N), "cpu-ns/op")
}

// coreSeq runs body b.N times with its loop index.
func coreSeq(b *testing.B, body func(i int)) {
	b.ReportAllocs()
	start := coreCPUNanos()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		body(i)
	}
	b.StopTimer()
	coreReportCPU(b, start)
}

// corePar runs body from every P with its own loop index.
func corePar(b *testing.B, body func(i int)) {
	b.ReportAllocs()
	start := coreCPUNanos()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			body(i)
			i++
		}
	})
	b.StopTimer()
	coreReportCPU(b, start)
}

func BenchmarkCounterInc(b *testing.B) {
	var a atomic.Int64
	tc := registry.New().Counter("c")
	gc := gometrics.NewCounter()
	pc := prometheus.NewCounter(prometheus.CounterOpts{Name: "c_total"})
	vc := vm.NewSet().NewCounter("c_total")
	cases := []struct {
		lib string
		f   func()
	}{
		{"atomic", func() { a.Add(1) }},
		{"tapes", tc.Inc},
		{"gometrics", func() { gc.Inc(1) }},
		{"prometheus", pc.Inc},
		{"victoria", vc.Inc},
	}
	for _, c := range cases {
		b.Run("lib="+c.lib, func(b *testing.B) { coreSeq(b, func(int) { c.f() }) })
	}
	for _, c := range cases {
		b.Run("par/lib="+c.lib, func(b *testing.B) { corePar(b, func(int) { c.f() }) })
	}
}

func BenchmarkMeterMark(b *testing.B) {
	tm := registry.New().Meter("m")
	gm := gometrics.NewMeter()
	defer gm.Stop()
	cases := []struct {
		lib string
		f   func()
	}{
		{"tapes", func() { tm.Mark(1) }},
		{"gometrics", func() { gm.Mark(1) }},
	}
	for _, c := range cases {
		b.Run("lib="+c.lib, func(b *testing.B) { coreSeq(b, func(int) { c.f() }) })
		b.Run("par/lib="+c.lib, func(b *testing.B) { corePar(b, func(int) { c.f() }) })
	}
}

func BenchmarkTimerUpdate(b *testing.B) {
	tt := registry.New().Timer("t")
	gt := gometrics.NewTimer()
	defer gt.Stop()
	ph := corePromHistogram()
	vh := vm.NewSet().NewHistogram("t")
	cases := []struct {
		lib string
		f   func(d time.Duration)
	}{
		{"tapes", tt.Update},
		{"gometrics", gt.Update},
		{"prometheus", func(d time.Duration) { ph.Observe(d.Seconds()) }},
		{"victoria", func(d time.Duration) { vh.Update(d.Seconds()) }},
	}
	for _, c := range cases {
		b.Run("lib="+c.lib, func(b *testing.B) { coreSeq(b, func(i int) { c.f(coreLatencies[i&1023]) }) })
	}
	for _, c := range cases {
		b.Run("par/lib="+c.lib, func(b *testing.B) { corePar(b, func(i int) { c.f(coreLatencies[i&1023]) }) })
	}
}

func BenchmarkHistogramUpdate(b *testing.B) {
	th := registry.New().Histogram("h")
	gh := gometrics.NewHistogram(gometrics.NewExpDecaySample(1028, 0.015))
	ph := corePromHistogram()
	ps := corePromSummary()
	vh := vm.NewSet().NewHistogram("h")
	vs := vm.NewSet().NewSummary("s")
	var values [1024]float64
	for i, d := range coreLatencies {
		values[i] = d.Seconds()
	}
	cases := []struct {
		lib string
		f   func(i int)
	}{
		{"tapes", func(i int) { th.Update(values[i&1023]) }},
		{"gometrics-expdecay", func(i int) { gh.Update(int64(coreLatencies[i&1023])) }},
		{"prometheus-classic", func(i int) { ph.Observe(values[i&1023]) }},
		{"prometheus-summary", func(i int) { ps.Observe(values[i&1023]) }},
		{"victoria", func(i int) { vh.Update(values[i&1023]) }},
		{"victoria-summary", func(i int) { vs.Update(values[i&1023]) }},
	}
	for _, c := range cases {
		b.Run("lib="+c.lib, func(b *testing.B) { coreSeq(b, c.f) })
	}
	for _, c := range cases {
		b.Run("par/lib="+c.lib, func(b *testing.B) { corePar(b, c.f) })
	}
}

// BenchmarkTimerRead reads every value a reporter needs from one timer that
// has seen 1 µs to 10 s from every P: the count, the rates and six
// quantiles.
func BenchmarkTimerRead(b *testing.B) {
	tt := registry.New().Timer("t")
	gt := gometrics.NewTimer()
	defer gt.Stop()
	spread := func(f func(time.Duration)) {
		var done atomic.Int64
		n := runtime.GOMAXPROCS(0)
		ch := make(chan struct{})
		for range n {
			go func() {
				for d := time.Microsecond; d <= 10*time.Second; d += d / 50 {
					f(d)
				}
				done.Add(1)
				ch <- struct{}{}
			}()
		}
		for range n {
			<-ch
		}
	}
	spread(tt.Update)
	spread(gt.Update)
	qs := registry.Quantiles[:]
	var sink float64
	b.Run("lib=tapes", func(b *testing.B) {
		coreSeq(b, func(int) {
			s := tt.Snapshot()
			sink += s.Quantiles[5] + s.Rates.M1
		})
	})
	b.Run("lib=gometrics", func(b *testing.B) {
		coreSeq(b, func(int) {
			s := gt.Snapshot()
			sink += s.Percentiles(qs)[5] + s.Rate1()
		})
	})
	_ = sink
}

// BenchmarkOriginal reproduces the original tapes benchmark: 200,000 times
// timing an empty block. One op is the 200,000 iterations; ms/200k is the
// total per library.
func BenchmarkOriginal(b *testing.B) {
	const n = 200_000
	tt := registry.New().Timer("t")
	gt := gometrics.NewTimer()
	defer gt.Stop()
	ph := corePromHistogram()
	vh := vm.NewSet().NewHistogram("t")
	cases := []struct {
		lib string
		f   func()
	}{
		{"tapes", func() { tt.Time().Stop() }},
		{"gometrics", func() { gt.Time(func() {}) }},
		{"prometheus", func() { prometheus.NewTimer(ph).ObserveDuration() }},
		{"victoria", func() { vh.UpdateDuration(time.Now()) }},
	}
	for _, c := range cases {
		b.Run("lib="+c.lib, func(b *testing.B) {
			start := coreCPUNanos()
			coreSeq(b, func(int) {
				for range n {
					c.f()
				}
			})
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/200k")
			b.ReportMetric(float64(coreCPUNanos()-start)/1e6/float64(b.N), "cpu-ms/200k")
		})
	}
}

// BenchmarkCreate10kTimers measures what 10,000 timers cost: creating them
// and recording one value into each (which allocates the first shard and
// bucket arrays). B/op is the memory of 10,000 timers.
func BenchmarkCreate10kTimers(b *testing.B) {
	const n = 10_000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("svc.endpoint%d.latency", i)
	}
	b.Run("lib=tapes", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := registry.New()
			for _, name := range names {
				r.Timer(name).Update(time.Millisecond)
			}
		}
	})
	b.Run("lib=gometrics", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := gometrics.NewRegistry()
			for _, name := range names {
				gometrics.GetOrRegisterTimer(name, r).Update(time.Millisecond)
			}
			r.UnregisterAll() // stops the meters' arbiter references
		}
	})
	b.Run("lib=prometheus", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := prometheus.NewRegistry()
			for i := range names {
				h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: fmt.Sprintf("h%d", i)})
				r.MustRegister(h)
				h.Observe(0.001)
			}
		}
	})
	b.Run("lib=victoria", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s := vm.NewSet()
			for i := range names {
				s.NewHistogram(fmt.Sprintf("h%d", i)).Update(0.001)
			}
		}
	})
}

// BenchmarkHistogramUpdateMany records the 1024 log-normal values with one
// UpdateMany call per op; cpu-ns/op / 1024 is the cost per value of the
// loop every value goes through.
func BenchmarkHistogramUpdateMany(b *testing.B) {
	th := registry.New().Histogram("h")
	var values [1024]float64
	for i, d := range coreLatencies {
		values[i] = d.Seconds()
	}
	b.Run("lib=tapes", func(b *testing.B) { coreSeq(b, func(int) { th.UpdateMany(values[:]) }) })
}

// BenchmarkHistogramUpdateRoundRobin records into 8 histograms in turn, as
// a service timing a few operations does: each P's ring then holds runs of
// one value, so what a drain costs per run (not per value) shows.
func BenchmarkHistogramUpdateRoundRobin(b *testing.B) {
	r := registry.New()
	var hs [8]*registry.Histogram
	for i := range hs {
		hs[i] = r.Histogram(fmt.Sprintf("h%d", i))
	}
	var values [1024]float64
	for i, d := range coreLatencies {
		values[i] = d.Seconds()
	}
	b.Run("lib=tapes", func(b *testing.B) { coreSeq(b, func(i int) { hs[i&7].Update(values[i&1023]) }) })
	b.Run("par/lib=tapes", func(b *testing.B) { corePar(b, func(i int) { hs[i&7].Update(values[i&1023]) }) })
}
