package statsd

import (
	"math"
	"strconv"

	"github.com/cactus/go-statsd-client/v5/statsd"

	"github.com/tapes-go/tapes/registry"
)

// bucket is one bucket of a native histogram: index at its schema, count.
type bucket struct {
	i int32
	n uint64
}

// timerState is what a timer's previous report sent: its cumulative
// buckets then, to send only the values recorded since.
type timerState struct {
	schema int32
	count  uint64
	zero   uint64
	pos    []bucket // ascending index
	gen    uint64

	delta []bucket // scratch: this report's new values per bucket
}

// timer sends the values t recorded since the previous report as |ms
// samples: the registry keeps no raw values, but its cumulative buckets
// (0.54% wide) tell how many values fell in each bucket since then, and
// each goes out as its bucket's middle, the value the registry's own
// quantiles report. At most Options.TimerSamples go out: beyond that,
// consecutive values (in value order) are grouped w at a time and each
// group sends its middle value once with sample rate 1/w, so StatsD (and
// statsd_exporter, which repeats a sample int(1/rate) times) count every
// value and see their distribution.
func (r *Reporter) timer(c *statsd.Client, name string, t *registry.Timer) error {
	st := r.timers[name]
	if st != nil && t.Count() == st.count {
		st.gen = r.gen
		return nil // nothing new: no need to read the buckets
	}
	cur := &r.native
	t.Histogram().NativeInto(cur)
	if st == nil || cur.Count < st.count || cur.Schema > st.schema {
		// New, or gone and registered again since the last report (its
		// counts restarted): everything it holds is new.
		st = &timerState{schema: cur.Schema}
		r.timers[name] = st
	}
	st.gen = r.gen
	if cur.Count == st.count {
		return nil
	}
	st.delta = diff(st.delta[:0], cur, st)
	zero := cur.ZeroCount - min(st.zero, cur.ZeroCount)

	// Remember this report's buckets.
	st.schema, st.count, st.zero = cur.Schema, cur.Count, cur.ZeroCount
	st.pos = st.pos[:0]
	eachBucket(cur.PositiveSpans, cur.PositiveCounts, func(i int32, n uint64) {
		st.pos = append(st.pos, bucket{i, n})
	})

	total := zero
	for _, b := range st.delta {
		total += b.n
	}
	if total == 0 {
		return nil // only negative values, which a timer never records
	}
	w := (total + uint64(r.opts.TimerSamples) - 1) / uint64(r.opts.TimerSamples)
	var err error
	send := func(ms float64, weight uint64) {
		if e := c.Raw(name, formatSample(ms, weight), 1); e != nil && err == nil {
			err = e
		}
	}
	// Group g holds the values of ranks [g*w, g*w+size) in value order
	// and sends the value at its middle rank.
	var g, below uint64 // group, values in the buckets before this one
	walk := func(ms float64, n uint64) {
		for g*w < total {
			size := min(w, total-g*w)
			if g*w+(size-1)/2 >= below+n {
				break
			}
			send(ms, size)
			g++
		}
		below += n
	}
	if zero > 0 {
		walk(0, zero)
	}
	for _, b := range st.delta {
		walk(mid(b.i, cur.Schema)*1000, b.n)
	}
	return err
}

// diff appends to dst the positive buckets of cur minus those of prev
// (brought down to cur's schema when the histogram lowered its schema
// since), leaving out those with no new values.
func diff(dst []bucket, cur *registry.NativeHistogram, prev *timerState) []bucket {
	d := prev.schema - cur.Schema // >= 0: a schema only goes down
	p := 0
	var pi int32
	var pn uint64
	nextPrev := func() bool {
		if p >= len(prev.pos) {
			return false
		}
		pi, pn = downIndex(prev.pos[p].i, d), prev.pos[p].n
		p++
		// Merged buckets: the previous ones that fall in the same one now.
		for p < len(prev.pos) && downIndex(prev.pos[p].i, d) == pi {
			pn += prev.pos[p].n
			p++
		}
		return true
	}
	havePrev := nextPrev()
	eachBucket(cur.PositiveSpans, cur.PositiveCounts, func(i int32, n uint64) {
		for havePrev && pi < i {
			havePrev = nextPrev() // emptied since: cannot happen, counts only grow
		}
		if havePrev && pi == i {
			n -= min(pn, n)
			havePrev = nextPrev()
		}
		if n > 0 {
			dst = append(dst, bucket{i, n})
		}
	})
	return dst
}

// downIndex maps bucket i to its bucket d schemas lower: bucket j there
// holds the buckets (j-1)*2^d+1 .. j*2^d (the registry's merge rule).
func downIndex(i, d int32) int32 { return (i + (1 << d) - 1) >> d }

// eachBucket calls f for every bucket of spans and counts, in order.
func eachBucket(spans []registry.BucketSpan, counts []uint64, f func(i int32, n uint64)) {
	var next int32
	k := 0
	for _, s := range spans {
		i := next + s.Offset
		for range s.Length {
			f(i, counts[k])
			k++
			i++
		}
		next = i
	}
}

// mid is the middle of bucket i at schema, in seconds: (base^(i-1),
// base^i], base = 2^(2^-schema).
func mid(i, schema int32) float64 {
	w := math.Ldexp(1, -int(schema))
	lo, hi := math.Exp2(float64(i-1)*w), math.Exp2(float64(i)*w)
	return lo + (hi-lo)/2
}

// formatSample writes one |ms sample: the value to 6 significant digits
// (the buckets are 0.54% wide: more digits would only be noise) in plain
// decimal, which every StatsD parses, and for a sample standing for weight
// values the rate 1/weight, nudged so that a server computing int(1/rate)
// (statsd_exporter) gets weight, not weight-1.
func formatSample(ms float64, weight uint64) string {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(ms, 'g', 6, 64), 64)
	b := strconv.AppendFloat(make([]byte, 0, 32), v, 'f', -1, 64)
	b = append(b, "|ms"...)
	if weight > 1 {
		rate := 1 / float64(weight)
		for 1/rate < float64(weight) {
			rate = math.Nextafter(rate, 0)
		}
		b = append(b, "|@"...)
		b = strconv.AppendFloat(b, rate, 'f', -1, 64)
	}
	return string(b)
}
