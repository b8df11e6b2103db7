package registry

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestHistogramOriginal(t *testing.T) {
	h := New().Histogram("h")
	for _, v := range []float64{1, 2, 2, 1} {
		h.Update(v)
	}
	s := h.Snapshot()
	if s.Count != 4 || s.WindowCount != 4 || s.Min != 1 || s.Max != 2 || s.Mean != 1.5 || s.Sum != 6 {
		t.Fatalf("%+v", s)
	}
	// Sample stddev (n-1) of the bucket midpoints: within RelativeError of
	// the values' root mean square of the exact sqrt(1/3).
	if rms := math.Sqrt(10.0 / 4); !near(s.Stddev, math.Sqrt(1.0/3), RelativeError*rms) || s.Stddev == 0 {
		t.Fatalf("stddev %v", s.Stddev)
	}
	// Nearest rank: rank ceil(0.5*4) = 2 of [1 1 2 2] is 1.
	if !near(s.Quantiles[0], 1, RelativeError) || !near(s.Quantiles[1], 2, 2*RelativeError) {
		t.Fatalf("quantiles %v", s.Quantiles)
	}
	if !near(s.Quantiles[5], 2, 2*RelativeError) || s.Quantiles[5] > 2 { // at most max
		t.Fatalf("q999 %v", s.Quantiles[5])
	}
}

func TestHistogramIgnoresNaNAndInf(t *testing.T) {
	h := New().Histogram("h")
	var sk Sketch
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), 3} {
		h.Update(v)
		sk.Add(v)
	}
	s := h.Snapshot()
	if s.Count != 1 || s.Min != 3 || s.Max != 3 || s.Sum != 3 || sk.Count() != 1 || sk.Max() != 3 {
		t.Fatalf("%+v %+v", s, sk)
	}
}

func TestNearestRankDefinition(t *testing.T) {
	var sk Sketch
	for _, v := range []float64{4, 3, 2, 1} {
		sk.Add(v)
	}
	for q, want := range map[float64]float64{0: 1, 0.25: 1, 0.26: 2, 0.5: 2, 0.75: 3, 0.76: 4, 1: 4} {
		if got := sk.Quantile(q); !near(got, want, want*RelativeError) {
			t.Errorf("q%v = %v, want %v", q, got, want)
		}
	}
	var empty Sketch
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 || empty.Stddev() != 0 {
		t.Error("empty sketch")
	}
}

// exactQuantile is the nearest-rank quantile of sorted values.
func exactQuantile(sorted []float64, q float64) float64 {
	r := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(r, 1), len(sorted))-1]
}

// TestQuantileAccuracy compares every reported quantile with the exact
// nearest-rank quantile on a million values from distributions with very
// different shapes; the error bound holds whatever the distribution.
func TestQuantileAccuracy(t *testing.T) {
	n := 1_000_000
	if raceEnabled {
		n = 100_000 // the race detector makes Update ~20x slower
	}
	dists := map[string]func(r *rand.Rand) float64{
		"lognormal": func(r *rand.Rand) float64 { return 1e-3 * math.Exp(2*r.NormFloat64()) },
		"bimodal": func(r *rand.Rand) float64 {
			if r.IntN(10) < 7 {
				return 10 + r.NormFloat64()
			}
			return 2000 + 100*r.NormFloat64()
		},
		"pareto":          func(r *rand.Rand) float64 { return 1 / math.Pow(1-r.Float64(), 1/1.1) },
		"uniformints":     func(r *rand.Rand) float64 { return float64(1 + r.IntN(1_000_000)) },
		"range1e-9to1e12": func(r *rand.Rand) float64 { return math.Pow(10, -9+21*r.Float64()) },
		"negative":        func(r *rand.Rand) float64 { return -1e-3 * math.Exp(2*r.NormFloat64()) },
		"mixedsigns": func(r *rand.Rand) float64 {
			v := math.Pow(10, -9+21*r.Float64())
			if r.IntN(3) == 0 {
				return -v
			}
			return v
		},
		"constant": func(r *rand.Rand) float64 { return 42.5 },
	}
	qs := []float64{0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.999, 0.9999}
	for name, gen := range dists {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(42, uint64(len(name))))
			h := New(WithClock(newFakeClock())).Histogram("h")
			vals := make([]float64, n)
			sum := 0.0
			for i := range vals {
				vals[i] = gen(rng)
				sum += vals[i]
				h.Update(vals[i])
			}
			slices.Sort(vals)
			s := h.Snapshot()
			if s.Count != uint64(n) || s.WindowCount != uint64(n) || s.Min != vals[0] || s.Max != vals[n-1] {
				t.Fatalf("count %d/%d min %v max %v", s.Count, s.WindowCount, s.Min, s.Max)
			}
			if !near(s.Mean, sum/float64(n), 1e-9*math.Abs(sum/float64(n))+1e-12) {
				t.Errorf("mean %v want %v", s.Mean, sum/float64(n))
			}
			// The two distributions spread over 70 and 140 octaves fill
			// more buckets than the cap (4096), so their histograms lower
			// the schema and report within that schema's bound; every
			// other keeps schema 6 and 0.54%.
			bound := RelativeErrorAt(h.Schema())
			wide := name == "range1e-9to1e12" || name == "mixedsigns"
			if wide != (h.Schema() < MaxSchema) {
				t.Errorf("schema %d", h.Schema())
			}
			for i, q := range Quantiles {
				want := exactQuantile(vals, q)
				if got := s.Quantiles[i]; math.Abs(got-want) > max(0.01, bound)*math.Abs(want) {
					t.Errorf("%s = %v, exact %v (%.3f%%)", QuantileKeys[i], got, want, 100*math.Abs(got-want)/math.Abs(want))
				}
			}
			sk := h.Sketch()
			worst := 0.0
			for _, q := range qs {
				want := exactQuantile(vals, q)
				got := sk.Quantile(q)
				e := math.Abs(got-want) / math.Abs(want)
				if want == 0 {
					e = math.Abs(got)
				}
				worst = max(worst, e)
				if e > bound*(1+1e-9) {
					t.Errorf("q%v = %v, exact %v (%.3f%%)", q, got, want, 100*e)
				}
			}
			t.Logf("schema %d: worst relative error %.3f%% over %d quantiles (bound %.3f%%)", h.Schema(), 100*worst, len(qs), 100*bound)
		})
	}
}

// TestStddev: a Sketch's own Add keeps the exact variance even at a large
// offset; a histogram's comes from its bucket midpoints and stays within
// RelativeError of the values' root mean square.
func TestStddev(t *testing.T) {
	var sk Sketch
	for _, v := range []float64{1e9 + 1, 1e9 + 2, 1e9 + 3, 1e9 + 4} {
		sk.Add(v)
	}
	if !near(sk.Stddev(), math.Sqrt(5.0/3), 1e-6) || sk.Mean() != 1e9+2.5 {
		t.Fatalf("sketch stddev %v mean %v", sk.Stddev(), sk.Mean())
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for name, gen := range map[string]func() float64{
		"normal":    func() float64 { return 100 + 15*rng.NormFloat64() },
		"lognormal": func() float64 { return math.Exp(rng.NormFloat64()) },
		"offset":    func() float64 { return 1e6 + rng.Float64() },
		"signs":     func() float64 { return 10 * rng.NormFloat64() },
		// Narrower than one bucket: a bucket-based variance reads 0 here.
		"narrow": func() float64 { return 0.005 + 1e-6*rng.NormFloat64() },
	} {
		h := New(WithClock(newFakeClock())).Histogram("h")
		var exact Sketch
		sq := 0.0
		for range 20000 {
			v := gen()
			h.Update(v)
			exact.Add(v)
			sq += v * v
		}
		rms := math.Sqrt(sq / 20000)
		s := h.Snapshot()
		if !near(s.Stddev, exact.Stddev(), 1e-6*exact.Stddev()) || !near(s.Mean, exact.Mean(), 1e-9*rms) {
			t.Errorf("%s: stddev %v, exact %v; mean %v vs %v", name, s.Stddev, exact.Stddev(), s.Mean, exact.Mean())
		}
		t.Logf("%s: stddev %.6g exact %.6g (%.3f%%)", name, s.Stddev, exact.Stddev(), 100*math.Abs(s.Stddev-exact.Stddev())/exact.Stddev())
	}
}

func TestSketchMergeEqualsUnion(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	var union Sketch
	parts := make([]Sketch, 3)
	for i := range 100_000 {
		v := math.Pow(10, -5+10*rng.Float64())
		if i%5 == 0 {
			v = -v
		}
		union.Add(v)
		parts[rng.IntN(3)].Add(v)
	}
	var merged Sketch
	for i := range parts {
		merged.Merge(&parts[i])
	}
	merged.Merge(&Sketch{}) // merging an empty sketch changes nothing
	if merged.Count() != union.Count() || merged.Min() != union.Min() || merged.Max() != union.Max() {
		t.Fatalf("merged %d %v %v, union %d %v %v", merged.Count(), merged.Min(), merged.Max(), union.Count(), union.Min(), union.Max())
	}
	if !near(merged.Mean(), union.Mean(), 1e-9*math.Abs(union.Mean())) || !near(merged.Stddev(), union.Stddev(), 1e-9*union.Stddev()) {
		t.Fatalf("moments %v %v vs %v %v", merged.Mean(), merged.Stddev(), union.Mean(), union.Stddev())
	}
	if !slices.Equal(sketchBuckets(&merged), sketchBuckets(&union)) || merged.Schema() != union.Schema() {
		t.Fatal("bucket counts differ")
	}
	for q := 0.0; q <= 1; q += 0.001 {
		if merged.Quantile(q) != union.Quantile(q) {
			t.Fatalf("q%v: %v vs %v", q, merged.Quantile(q), union.Quantile(q))
		}
	}

	// Histograms merge the same way through Sketch.
	a, b := New().Histogram("a"), New().Histogram("b")
	var both Sketch
	for i := range 1000 {
		v := float64(i) * 0.37
		both.Add(v)
		if i%2 == 0 {
			a.Update(v)
		} else {
			b.Update(v)
		}
	}
	sk := a.Sketch()
	sk.Merge(b.Sketch())
	if sk.Count() != 1000 || sk.Quantile(0.99) != both.Quantile(0.99) || sk.Max() != both.Max() {
		t.Fatalf("histogram sketches: %d %v %v", sk.Count(), sk.Quantile(0.99), both.Quantile(0.99))
	}
}

// TestWindowExpiry: values describe the last window/2..window of time; a
// whole window of silence reads 0 for everything but the cumulative count.
func TestWindowExpiry(t *testing.T) {
	for _, kind := range []string{"histogram", "timer"} {
		t.Run(kind, func(t *testing.T) {
			clk := newFakeClock()
			r := New(WithClock(clk), WithWindow(10*time.Second))
			var update func(float64)
			var snap func() HistogramSnapshot
			if kind == "timer" {
				tm := r.Timer("w")
				update = func(v float64) { tm.Update(time.Duration(v * 1e9)) }
				snap = func() HistogramSnapshot { return tm.Snapshot().HistogramSnapshot }
			} else {
				h := r.Histogram("w")
				update, snap = h.Update, h.Snapshot
			}
			for range 1000 {
				update(100) // a spike at t = 0
			}
			clk.Add(4 * time.Second)
			if s := snap(); s.Max != 100 || s.WindowCount != 1000 {
				t.Fatalf("t=4: %+v", s)
			}
			clk.Add(time.Second) // t = 5: second half-window
			update(1)
			if s := snap(); s.Min != 1 || s.Max != 100 || s.WindowCount != 1001 || s.Count != 1001 {
				t.Fatalf("t=5: %+v", s)
			}
			clk.Add(5 * time.Second) // t = 10: the spike has left the window
			s := snap()
			if s.Min != 1 || s.Max != 1 || s.Mean != 1 || s.WindowCount != 1 || s.Count != 1001 || s.Quantiles[5] != 1 {
				t.Fatalf("t=10: %+v", s)
			}
			clk.Add(5 * time.Second) // t = 15: a whole window of silence
			s = snap()
			if s.Count != 1001 || s.Sum != 100001 {
				t.Fatalf("t=15: cumulative %d %v", s.Count, s.Sum)
			}
			if s.WindowCount != 0 || s.Min != 0 || s.Max != 0 || s.Mean != 0 || s.Stddev != 0 || s.Quantiles != [NumQuantiles]float64{} {
				t.Fatalf("t=15: window values not 0: %+v", s)
			}
			clk.Add(time.Hour) // values resume after a long silence
			update(7)
			update(9)
			if s := snap(); s.Min != 7 || s.Max != 9 || s.Count != 1003 || s.WindowCount != 2 || s.Mean != 8 {
				t.Fatalf("after 1 h: %+v", s)
			}
		})
	}
}

// TestBytesBounded: a timer that saw 1 µs to 10 s in both of its
// half-windows, and retired earlier ones into its cumulative counts, holds
// at most 40 KiB, and no more after a million further observations in that
// range over many window rotations.
func TestBytesBounded(t *testing.T) {
	clk := newFakeClock()
	tm := New(WithClock(clk)).Timer("t")
	small := tm.Histogram().Bytes()
	tm.Update(time.Millisecond)
	one := tm.Histogram().Bytes()
	for range 3 { // fill both half-windows and the cumulative counts
		for d := time.Microsecond; d <= 10*time.Second; d += d / 64 {
			tm.Update(d)
		}
		tm.Update(10 * time.Second)
		clk.Add(DefaultWindow / 2)
	}
	full := tm.Histogram().Bytes()
	if small > 1024 || one > 1536 || full > 40<<10 {
		t.Fatalf("bytes: empty %d, one value %d, 1µs..10s %d", small, one, full)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	n := 1_000_000
	if raceEnabled {
		n = 200_000
	}
	for i := range n {
		tm.Update(time.Microsecond + time.Duration(rng.Int64N(int64(10*time.Second))))
		if i%100_000 == 0 {
			clk.Add(DefaultWindow / 2)
		}
	}
	if b := tm.Histogram().Bytes(); b > full {
		t.Fatalf("grew from %d to %d with more observations", full, b)
	}
	t.Logf("empty %d B, one value %d B, 1µs..10s %d B", small, one, full)
}

// TestBytesHonest checks Bytes against the heap growth of building
// histograms: it must not under-report.
func TestBytesHonest(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const n = 200
	hs := make([]*Histogram, n)
	var before, after runtime.MemStats
	// Twice: sync.Pool keeps a victim cache for one GC, and pooled sketches
	// of earlier tests freed during the measurement would offset it.
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range hs {
		hs[i] = &Histogram{}
		for v := 1e-6; v < 10; v *= 1.05 {
			hs[i].Update(v)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	reported := 0
	for _, h := range hs {
		reported += h.Bytes()
	}
	heap := int(after.HeapAlloc - before.HeapAlloc)
	if reported < heap*9/10 || reported > heap*11/10 {
		t.Fatalf("Bytes says %d per histogram, the heap grew %d", reported/n, heap/n)
	}
	runtime.KeepAlive(hs)
}

func TestHistogramZeroValueAndNegativeClock(t *testing.T) {
	var h Histogram
	h.Update(1)
	h.Update(-1)
	if s := h.Snapshot(); s.Count != 2 || s.Min != -1 || s.Max != 1 || s.Mean != 0 {
		t.Fatalf("%+v", s)
	}
	clk := &fakeClock{}
	clk.ns.Store(-int64(time.Hour)) // before 1970
	h2 := New(WithClock(clk)).Histogram("h")
	h2.Update(5)
	clk.Add(30 * time.Minute)
	h2.Update(6)
	if s := h2.Snapshot(); s.Count != 2 || s.Max != 6 {
		t.Fatalf("%+v", s)
	}
}

// TestConcurrentNoLostCounts hammers every kind from many goroutines with
// readers running, and checks exact totals.
func TestConcurrentNoLostCounts(t *testing.T) {
	r := New()
	const workers, per = 16, 5000
	var wg, rg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		rg.Add(1)
		go func() {
			defer rg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r.Stats()
				r.Timer("c.timer").Snapshot()
				r.Histogram("c.hist").Count()
			}
		}()
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, m, tm, h := r.Counter("c.counter"), r.Meter("c.meter"), r.Timer("c.timer"), r.Histogram("c.hist")
			for i := range per {
				c.Inc()
				m.Mark(2)
				tm.Update(time.Duration(i+1) * time.Microsecond)
				h.Update(float64(w))
				if i%1000 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	if v := r.Counter("c.counter").Value(); v != workers*per {
		t.Errorf("counter %d", v)
	}
	if v := r.Meter("c.meter").Count(); v != 2*workers*per {
		t.Errorf("meter %d", v)
	}
	ts := r.Timer("c.timer").Snapshot()
	if ts.Count != workers*per || ts.WindowCount != workers*per || ts.Rates.Count != workers*per || ts.Max != float64(per)*1e-6 {
		t.Errorf("timer %+v", ts)
	}
	hs := r.Histogram("c.hist").Snapshot()
	wantSum := float64(per * workers * (workers - 1) / 2)
	if hs.Count != workers*per || hs.WindowCount != workers*per || hs.Sum != wantSum || hs.Min != 0 || hs.Max != workers-1 {
		t.Errorf("histogram %+v, want sum %v", hs, wantSum)
	}
}

// TestGOMAXPROCSChanges: P ids beyond the shard table grow it while other
// goroutines record, and nothing is lost.
func TestGOMAXPROCSChanges(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := New().Histogram("h")
	tm := New().Timer("t")
	var wg sync.WaitGroup
	var total int
	for _, procs := range []int{1, 4, 2, 8, 3} {
		runtime.GOMAXPROCS(procs)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 2000 {
					h.Update(float64(i % 7))
					tm.Update(time.Millisecond)
					if i%100 == 0 {
						runtime.Gosched()
					}
				}
			}()
		}
		total += 8 * 2000
		h.Snapshot()
	}
	wg.Wait()
	if h.Count() != uint64(total) || tm.Count() != uint64(total) || h.Snapshot().WindowCount != uint64(total) {
		t.Fatalf("counts %d %d, want %d", h.Count(), tm.Count(), total)
	}
	// Sixteen goroutines on up to 8 Ps collide on the lock: the
	// histogram grows cells, never more than maxCells.
	if c := h.Cells(); c > maxCells {
		t.Fatalf("%d cells, cap %d", c, maxCells)
	}
}

// TestRotationUnderLoad moves an injected clock across many half-windows
// while writers and readers run: rotation (retiring a half-window into the
// cumulative count) must lose and double-count nothing, and readers must
// never see the cumulative count go backwards.
func TestRotationUnderLoad(t *testing.T) {
	clk := newFakeClock()
	r := New(WithClock(clk), WithWindow(2*time.Second))
	h := r.Histogram("h")
	const workers, per = 4, 20000
	var wg sync.WaitGroup
	done := make(chan struct{})
	var readerErr error
	var rwg sync.WaitGroup
	rwg.Add(2)
	go func() {
		defer rwg.Done()
		for {
			select {
			case <-done:
				return
			default:
				clk.Add(100 * time.Millisecond)
				runtime.Gosched()
			}
		}
	}()
	go func() {
		defer rwg.Done()
		var last uint64
		for {
			select {
			case <-done:
				return
			default:
			}
			s := h.Snapshot()
			if s.Count < last || s.WindowCount > s.Count {
				readerErr = fmt.Errorf("count went from %d to %d (window %d)", last, s.Count, s.WindowCount)
				return
			}
			last = s.Count
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				h.Update(1)
			}
		}()
	}
	wg.Wait()
	close(done)
	rwg.Wait()
	if readerErr != nil {
		t.Fatal(readerErr)
	}
	if h.Count() != workers*per || h.Sum() != workers*per {
		t.Fatalf("count %d sum %v, want %d", h.Count(), h.Sum(), workers*per)
	}
}

// TestBucketSpill: a bucket that reaches 2^32 values in one half-window
// spills into the overflow map and loses nothing, in the window's count,
// its quantiles and the cumulative count once the half-window retires.
func TestBucketSpill(t *testing.T) {
	clk := newFakeClock()
	h := New(WithClock(clk)).Histogram("h")
	h.Update(5)
	h.Count() // applies the pending value
	i := index6(math.Float64bits(5))
	w := &h.base.win[h.end.Load()/h.half()&1]
	*w.st.pos.at(i) = math.MaxUint32 - 1 // as if 2^32-2 fives had been recorded
	w.n += math.MaxUint32 - 2
	w.sum = 0
	for range 3 {
		h.Update(5) // 2^32-1, then the spill, then one more
	}
	want := uint64(1)<<32 + 1
	if n := h.Count(); n != want {
		t.Fatalf("count %d, want %d", n, want)
	}
	s := h.Snapshot()
	if s.WindowCount != want || !near(s.Quantiles[0], 5, 5*RelativeError) || s.Min != 5 || s.Max != 5 {
		t.Fatalf("snapshot %+v", s)
	}
	if nh := h.Native(); nh.Count != want || len(nh.PositiveCounts) != 1 || nh.PositiveCounts[0] != want {
		t.Fatalf("native %+v", nh)
	}
	h.Update(5) // the bucket keeps counting past the spill
	clk.Add(DefaultWindow / 2)
	h.Update(7) // a new half-window: the spilled one stays in the window
	if s := h.Snapshot(); s.WindowCount != want+2 || s.Count != want+2 {
		t.Fatalf("after a half-window: %+v", s)
	}
	clk.Add(DefaultWindow / 2)
	h.Update(9) // retires the spilled half-window into the cumulative count
	if s := h.Snapshot(); s.Count != want+3 || s.WindowCount != 2 {
		t.Fatalf("after retiring it: %+v", s)
	}
	nh := h.Native()
	var tot uint64
	for _, c := range nh.PositiveCounts {
		tot += c
	}
	if nh.Count != want+3 || tot != want+3 || nh.PositiveCounts[0] != want+1 {
		t.Fatalf("native after retiring: %+v", nh)
	}
}

// TestUpdateManyEqualsUpdate: UpdateMany leaves a histogram or timer in
// the state that calling Update for each value does (NaN and ±Inf
// ignored), across half-window rotations and slices longer than one pinned
// chunk; the timer's rates follow its count as with Update.
func TestUpdateManyEqualsUpdate(t *testing.T) {
	// One P, so that both paths put every value in the same shard and the
	// float sums are added in the same order.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	rng := rand.New(rand.NewPCG(1, 2))
	clk := newFakeClock()
	r := New(WithClock(clk), WithWindow(10*time.Second))
	one, many := r.Histogram("one"), r.Histogram("many")
	tone, tmany := r.Timer("tone"), r.Timer("tmany")
	for round := range 40 {
		n := rng.IntN(3 * manyChunk)
		vs := make([]float64, n)
		ds := make([]time.Duration, n)
		for i := range vs {
			switch rng.IntN(50) {
			case 0:
				vs[i] = math.NaN()
			case 1:
				vs[i] = math.Inf(1 - 2*rng.IntN(2))
			default:
				vs[i] = rng.NormFloat64() * 1e3
			}
			ds[i] = time.Duration(rng.ExpFloat64() * 1e7)
		}
		for i := range vs {
			one.Update(vs[i])
			tone.Update(ds[i])
		}
		many.UpdateMany(vs)
		tmany.UpdateMany(ds)
		if a, b := one.Snapshot(), many.Snapshot(); a != b {
			t.Fatalf("round %d: histogram\nUpdate     %+v\nUpdateMany %+v", round, a, b)
		}
		if a, b := tone.Snapshot(), tmany.Snapshot(); a != b {
			t.Fatalf("round %d: timer\nUpdate     %+v\nUpdateMany %+v", round, a, b)
		}
		clk.Add(time.Duration(rng.IntN(4000)) * time.Millisecond)
	}
	if s := many.Snapshot(); s.Count == 0 || s.WindowCount == 0 {
		t.Fatalf("nothing recorded: %+v", s)
	}
	many.UpdateMany(nil)
	many.UpdateMany([]float64{math.NaN()})
	if a, b := one.Snapshot(), many.Snapshot(); a != b {
		t.Fatalf("empty and all-NaN slices changed the histogram: %+v vs %+v", a, b)
	}
}

// BenchmarkTimerUpdateMany compares recording 1024 durations one Update at
// a time with one UpdateMany call; ns/value is the figure to read.
func BenchmarkTimerUpdateMany(b *testing.B) {
	ds := make([]time.Duration, 1024)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range ds {
		ds[i] = time.Duration(rng.ExpFloat64() * 1e6)
	}
	for _, mode := range []string{"Update", "UpdateMany"} {
		b.Run(mode, func(b *testing.B) {
			tm := New().Timer("t")
			for b.Loop() {
				if mode == "Update" {
					for _, d := range ds {
						tm.Update(d)
					}
				} else {
					tm.UpdateMany(ds)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ds)), "ns/value")
		})
	}
}

// BenchmarkHistogramUpdate records into one histogram, and round-robin into
// several: a P's ring then holds runs of one value each, so what a drain
// costs per run (not per value) shows.
func BenchmarkHistogramUpdate(b *testing.B) {
	vs := make([]float64, 1024)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range vs {
		vs[i] = rng.ExpFloat64() * 1e-3
	}
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("histograms=%d", n), func(b *testing.B) {
			r := New()
			hs := make([]*Histogram, n)
			for i := range hs {
				hs[i] = r.Histogram(fmt.Sprintf("h%d", i))
			}
			i := 0
			for b.Loop() {
				hs[i%n].Update(vs[i&1023])
				i++
			}
		})
	}
}

// A value recorded long ago that still sits in another P's ring must not
// show up in the current window when a later value reaches the cell first
// (UpdateMany applies directly).
func TestOldRingValuesStayOld(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	for trial := 0; trial < 40; trial++ {
		clk := newFakeClock()
		h := New(WithClock(clk), WithWindow(10*time.Second)).Histogram("h")
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() { defer wg.Done(); h.Update(1000) }()
		}
		wg.Wait()
		clk.Add(20 * time.Second) // two whole windows later
		h.UpdateMany([]float64{1})
		if s := h.Snapshot(); s.WindowCount != 1 || s.Max != 1 {
			t.Fatalf("trial %d: window holds %d values, max %v; want only the new value", trial, s.WindowCount, s.Max)
		}
	}
}

// TestRingRunsInterleaved: one goroutine records into many histograms in
// an irregular order (runs of 1..5 values, more distinct histograms than a
// drain groups, half-windows changing), with reads draining part-filled
// rings now and then; every histogram ends with exactly its own values.
// Exercises the drain's grouping (and its overflow past maxGroups), the
// run kept across drains and the ring's wrap.
func TestRingRunsInterleaved(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	clk := newFakeClock()
	r := New(WithClock(clk), WithWindow(10*time.Second))
	const n = 40
	hs := make([]*Histogram, n)
	type want struct {
		n             uint64
		sum, min, max float64
	}
	ws := make([]want, n)
	for i := range hs {
		hs[i] = r.Histogram(fmt.Sprintf("h%d", i))
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for step := range 20000 {
		i := rng.IntN(n)
		if step%3 == 0 {
			i = rng.IntN(4) // a few busy histograms among many quiet ones
		}
		for range 1 + rng.IntN(5) {
			v := float64(i*1000 + rng.IntN(1000))
			hs[i].Update(v)
			w := &ws[i]
			if w.n == 0 || v < w.min {
				w.min = v
			}
			if w.n == 0 || v > w.max {
				w.max = v
			}
			w.n++
			w.sum += v
		}
		switch rng.IntN(500) {
		case 0:
			hs[rng.IntN(n)].Count() // drains a part-filled ring
		case 1:
			clk.Add(3 * time.Second) // a new half-window now and then
		}
	}
	for i, h := range hs {
		s, w := h.Snapshot(), ws[i]
		if s.Count != w.n || s.Sum != w.sum {
			t.Fatalf("h%d: count %d sum %v, want %d and %v", i, s.Count, s.Sum, w.n, w.sum)
		}
		if s.WindowCount > 0 && (s.Min < w.min || s.Max > w.max) {
			t.Fatalf("h%d: window min %v max %v outside [%v, %v]", i, s.Min, s.Max, w.min, w.max)
		}
	}
}
