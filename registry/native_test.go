package registry

import (
	"maps"
	"math"
	"math/big"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"
)

// refBounds[j] is the float64 nearest to 2^(j/64), found exactly: of the
// neighbours of math.Exp2's answer, the one whose 64th power is nearest
// to 2^j.
var refBounds = func() (b [64]float64) {
	for j := range b {
		c := math.Exp2(float64(j) / 64)
		var best *big.Float
		for _, x := range []float64{math.Nextafter(c, 0), c, math.Nextafter(c, 4)} {
			p := new(big.Float).SetPrec(4000).SetFloat64(1)
			xf := new(big.Float).SetPrec(4000).SetFloat64(x)
			for range 64 {
				p.Mul(p, xf)
			}
			d := p.Sub(p, new(big.Float).SetPrec(4000).SetMantExp(big.NewFloat(1), j))
			d.Abs(d)
			if best == nil || d.Cmp(best) < 0 {
				best, b[j] = d, x
			}
		}
	}
	return b
}()

// refIndex is Prometheus' bucket index at schema 6, as client_golang
// computes it: frexp, then the first bound >= the fraction.
func refIndex(v float64) int32 {
	frac, exp := math.Frexp(math.Abs(v))
	return int32(exp-1)*64 + int32(sort.SearchFloat64s(refBounds[:], 2*frac))
}

// TestIndexIsPrometheusSchema6: the table lookup gives exactly the bucket
// Prometheus defines (upper bound inclusive), including values on and
// next to every boundary and across the exponent range.
func TestIndexIsPrometheusSchema6(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	check := func(v float64) {
		t.Helper()
		if got, want := index6(math.Float64bits(v)&^(1<<63)), refIndex(v); got != want {
			t.Fatalf("index of %v (%x) = %d, want %d", v, math.Float64bits(v), got, want)
		}
	}
	for e := -127; e < 1024; e += 7 {
		for j := 0; j <= 64; j++ {
			b := math.Ldexp(math.Exp2(float64(j)/64), e)
			check(b)
			check(math.Nextafter(b, 0))
			check(math.Nextafter(b, math.Inf(1)))
		}
	}
	for range 20000 {
		check(math.Ldexp(1+rng.Float64(), rng.IntN(400)-200))
	}
	// The reported value of a bucket is its middle, through the schema-6
	// table as through the general formula.
	for i := int32(-8200); i < 8200; i += 7 {
		lo, hi := bucketBounds(i, MaxSchema)
		if m := bucketMid(i, MaxSchema, false); math.Abs(m-(lo+hi)/2) > 1e-15*m || bucketMid(i, MaxSchema, true) != -m {
			t.Fatalf("bucketMid(%d) = %v, bounds %v %v", i, m, lo, hi)
		}
	}
	// Lower schemas merge buckets pairwise: bucket j holds 2j-1 and 2j.
	for i := int32(-300); i < 300; i++ {
		if downIndex(i, 1) != int32(math.Ceil(float64(i)/2)) || downIndex(i, 3) != int32(math.Ceil(float64(i)/8)) {
			t.Fatalf("downIndex(%d)", i)
		}
	}
}

// TestNativeIsCumulative: Native reports every value since creation, also
// those of half-windows long retired, in the exact buckets of the layout,
// with a count equal to the zero bucket plus every bucket.
func TestNativeIsCumulative(t *testing.T) {
	clk := newFakeClock()
	h := New(WithClock(clk), WithWindow(10*time.Second)).Histogram("h")
	rng := rand.New(rand.NewPCG(1, 1))
	want := map[int64]uint64{} // overKey -> count
	var zero, n uint64
	sum := 0.0
	for round := range 20 {
		for range 500 {
			v := math.Exp(3*rng.NormFloat64()) * 1e-3
			switch rng.IntN(10) {
			case 0:
				v = -v
			case 1:
				v = 0
			case 2:
				v = 1e-40 // below ZeroThreshold
			}
			h.Update(v)
			n++
			sum += v
			if math.Abs(v) <= ZeroThreshold {
				zero++
			} else {
				want[overKey(refIndex(v), v < 0)]++
			}
		}
		h.Update(math.NaN())
		clk.Add(time.Duration(round%4) * 3 * time.Second)
	}
	nh := h.Native()
	if nh.Schema != 6 || nh.ZeroThreshold != ZeroThreshold || nh.Count != n || nh.ZeroCount != zero || !near(nh.Sum, sum, 1e-9*math.Abs(sum)) {
		t.Fatalf("native %d/%d zero %d/%d sum %v/%v schema %d", nh.Count, n, nh.ZeroCount, zero, nh.Sum, sum, nh.Schema)
	}
	got := map[int64]uint64{}
	tot := nh.ZeroCount
	decode := func(spans []BucketSpan, counts []uint64, neg bool) {
		i, k := int32(0), 0
		for s, sp := range spans {
			if s == 0 {
				i = sp.Offset
			} else {
				i += sp.Offset
			}
			for range sp.Length {
				got[overKey(i, neg)] = counts[k]
				tot += counts[k]
				i++
				k++
			}
		}
		if k != len(counts) {
			t.Fatalf("%d counts for spans of %d buckets", len(counts), k)
		}
	}
	decode(nh.PositiveSpans, nh.PositiveCounts, false)
	decode(nh.NegativeSpans, nh.NegativeCounts, true)
	if tot != n || len(got) != len(want) {
		t.Fatalf("buckets: %d counted in %d buckets, want %d in %d", tot, len(got), n, len(want))
	}
	for k, c := range want {
		if got[k] != c {
			t.Fatalf("bucket %d: %d, want %d", k, got[k], c)
		}
	}
	// NativeInto reuses the slices: no allocation once warmed up (under
	// -race sync.Pool drops items on purpose, so only without it).
	var dst NativeHistogram
	h.NativeInto(&dst)
	if a := testing.AllocsPerRun(20, func() { h.NativeInto(&dst) }); a != 0 && !raceEnabled {
		t.Errorf("NativeInto allocates %v", a)
	}
}

// extremes feeds h one value per octave from ±1e-19 to ±1e19.
func extremes(h *Histogram) {
	for v := 1e-19; v < 1e19; v *= 2 {
		h.Update(v)
		h.Update(-v)
	}
}

// TestExtremesBounded: a histogram fed ±1e-19..±1e19, every octave, holds
// at most 16 KiB (was 65 KiB, dense from lowest to highest bucket), and
// keeps schema 6.
func TestExtremesBounded(t *testing.T) {
	h := New().Histogram("h")
	extremes(h)
	if b := h.Bytes(); b > 16<<10 || h.Schema() != MaxSchema {
		t.Fatalf("%d bytes, schema %d", b, h.Schema())
	}
	t.Logf("%d bytes", h.Bytes())
}

// TestManyExtremeHistogramsHeap is the attack: 20,000 histograms each fed
// ±1e-19..±1e19 hold at most 16 KiB each of heap (measured, not Bytes),
// also when every P has recorded into them at GOMAXPROCS 64.
func TestManyExtremeHistogramsHeap(t *testing.T) {
	n := 20_000
	if raceEnabled {
		n = 2000
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(64))
	hs := make([]*Histogram, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for i := range hs {
		hs[i] = &Histogram{}
	}
	per := n / 64
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, h := range hs[g*per : (g+1)*per] {
				extremes(h)
			}
		}()
	}
	wg.Wait()
	for _, h := range hs[64*per:] {
		extremes(h)
	}
	for g := range 64 { // every P records into every histogram too
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 64 {
				hs[i].Update(1e-3)
			}
		}()
	}
	wg.Wait()
	hs[0].Count() // apply what the rings hold
	runtime.GC()
	runtime.ReadMemStats(&after)
	per1 := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	if per1 > 16<<10 {
		t.Fatalf("%.0f bytes of heap per histogram", per1)
	}
	t.Logf("%.0f bytes of heap per histogram (%d histograms)", per1, n)
	runtime.KeepAlive(hs)
}

// TestBucketCapLowersSchema: values that would fill more buckets than the
// cap (every octave of the float64 range, 64 sub-buckets each) make the
// histogram lower its schema instead of growing: memory stays under the
// stated bound and quantiles stay within that schema's error bound.
func TestBucketCapLowersSchema(t *testing.T) {
	clk := newFakeClock()
	h := New(WithClock(clk)).Histogram("h")
	var sk Sketch
	var vals []float64
	for e := -1000; e < 1000; e += 3 {
		for j := range 64 {
			v := math.Ldexp(1+float64(j)/64, e)
			h.Update(v)
			sk.Add(v)
			vals = append(vals, v)
		}
	}
	s := h.Snapshot()
	if s.Count != uint64(len(vals)) || h.Schema() >= MaxSchema || sk.Schema() != h.Schema() {
		t.Fatalf("count %d, schema %d (sketch %d)", s.Count, h.Schema(), sk.Schema())
	}
	// One cell: two half-windows and the cumulative counts, each at most
	// maxBlocks blocks and two directories of maxDir entries.
	const bound = 1<<10 + 2*(maxBlocks*blockLen*4+2*maxDir*2) + maxBlocks*blockLen*8 + 2*maxDir*2
	if b := h.Bytes(); b > bound {
		t.Fatalf("%d bytes, bound %d", b, bound)
	}
	bnd := RelativeErrorAt(h.Schema())
	for i, q := range Quantiles {
		want := exactQuantile(vals, q)
		if got := s.Quantiles[i]; math.Abs(got-want) > bnd*want {
			t.Errorf("%s = %v, exact %v (bound %.2f%%)", QuantileKeys[i], got, want, 100*bnd)
		}
	}
	// The cap holds over rotations too: the cumulative counts lower the
	// schema when they pass it.
	for range 4 {
		clk.Add(DefaultWindow / 2)
		for _, v := range vals {
			h.Update(-v)
		}
	}
	if b := h.Bytes(); b > bound || h.Count() != 5*uint64(len(vals)) {
		t.Fatalf("after rotations: %d bytes (bound %d), count %d", h.Bytes(), bound, h.Count())
	}
	t.Logf("schema %d, %d bytes (bound %d)", h.Schema(), h.Bytes(), bound)
}

// TestCellsAdaptToContention: a histogram recorded from many Ps one at a
// time keeps one cell at GOMAXPROCS 64; writers colliding grow it to at
// most maxCells, and no value is lost either way.
func TestCellsAdaptToContention(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(64))
	h := New().Histogram("h")
	for g := range 64 { // one goroutine at a time, on whichever P
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range 1000 {
				h.Update(float64(g*1000 + i))
			}
		}()
		<-done
		h.Count()
	}
	if h.Cells() != 1 || h.Count() != 64000 {
		t.Fatalf("sequential writers: %d cells, count %d", h.Cells(), h.Count())
	}
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vs := make([]float64, 64)
			for i := range 2000 {
				h.Update(float64(i))
				if i%100 == 0 {
					h.UpdateMany(vs)
				}
			}
		}()
	}
	wg.Wait()
	if c := h.Cells(); c > maxCells || h.Count() != 64000+64*(2000+20*64) {
		t.Fatalf("concurrent writers: %d cells (cap %d), count %d", c, maxCells, h.Count())
	}
	t.Logf("%d cells after concurrent writers (cap %d)", h.Cells(), maxCells)
}

// TestNativeZeroEdges: values at the edges of the drain loop's fast path
// (normal values from 2^-127 up) and of the zero bucket land where
// Prometheus puts them, whichever path counts them.
func TestNativeZeroEdges(t *testing.T) {
	h := New().Histogram("h")
	want := map[int64]uint64{}
	var zero uint64
	for _, v := range []float64{ZeroThreshold, math.Nextafter(ZeroThreshold, 1), 0x1p-127,
		math.Nextafter(0x1p-127, 0), math.Nextafter(0x1p-127, 1), 5e-324, 0x1p-1022, 0x1p-100, 0x1.8p-100, ZeroThreshold} {
		for _, v := range []float64{v, -v, v} {
			h.Update(v)
			if math.Abs(v) <= ZeroThreshold {
				zero++
			} else {
				want[overKey(refIndex(v), v < 0)]++
			}
		}
	}
	nh := h.Native()
	if nh.Schema != MaxSchema || nh.ZeroCount != zero || nh.Count != 30 {
		t.Fatalf("schema %d zero %d (want %d) count %d", nh.Schema, nh.ZeroCount, zero, nh.Count)
	}
	got := map[int64]uint64{}
	for neg, sc := range [][]uint64{nh.PositiveCounts, nh.NegativeCounts} {
		spans := nh.PositiveSpans
		if neg == 1 {
			spans = nh.NegativeSpans
		}
		i, k := int32(0), 0
		for _, sp := range spans {
			i += sp.Offset
			for range sp.Length {
				if sc[k] != 0 {
					got[overKey(i, neg == 1)] = sc[k]
				}
				i++
				k++
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("buckets %v, want %v", got, want)
	}
}
