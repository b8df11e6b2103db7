// Package runtimemetrics registers a Go program's runtime and process
// metrics in a tapes registry, the way Dropwizard's JVM metric sets
// (MemoryUsageGaugeSet, GarbageCollectorMetricSet, ThreadStatesGaugeSet)
// or client_golang's Go and process collectors do: one call, and the
// registry reports goroutines, threads, heap, GC pauses, open files,
// resident memory and CPU time next to the application's own metrics.
//
//	set, err := runtimemetrics.Register(registry.Default, "myapp.runtime", runtimemetrics.Options{})
//	defer set.Stop()
//
// Everything is read from runtime/metrics (no stop-the-world
// runtime.ReadMemStats) and, on Linux, from /proc/self. The names, under
// the prefix:
//
//	go.goroutines, go.threads, go.gomaxprocs                      gauges
//	go.memory.total_bytes        all memory the Go runtime mapped (/memory/classes/total)
//	go.memory.heap_objects_bytes bytes in live and not yet swept heap objects
//	go.memory.heap_live_bytes    heap marked live by the last GC
//	go.memory.heap_goal_bytes    heap size at which the next GC starts
//	go.memory.stacks_bytes       goroutine stacks
//	go.memory.heap_objects       objects on the heap
//	go.memory.allocated_bytes, go.memory.allocated_objects        counters, since start
//	go.gc.cycles                                                  counter, since start
//	go.gc.gogc_percent, go.gc.gomemlimit_bytes                    gauges (settings)
//	go.gc.cpu_seconds            CPU time spent in the GC (the runtime's estimate), cumulative
//	go.gc.pauses                 timer: stop-the-world GC pauses since Register
//	go.sched.latencies           timer: time goroutines waited runnable before running
//	process.cpu_seconds          user + system CPU time, cumulative (getrusage)
//	process.open_fds, process.max_fds                             gauges (Linux)
//	process.resident_bytes, process.virtual_bytes                 gauges (Linux)
//	process.start_time_seconds   Unix time the process started (Linux)
//
// Gauges are functions read whenever the registry is read, so they are
// current at every scrape. Counters and the two timers come from
// cumulative runtime values: a goroutine samples them every
// Options.Interval and adds what changed (registry counters are integers,
// so the cumulative CPU times, which are fractional seconds, are gauges).
// Metrics the running Go version does not provide are not registered.
package runtimemetrics

import (
	"errors"
	"fmt"
	"math"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// Options tunes Register. The zero value is ready to use.
type Options struct {
	// Interval is how often the counters and the GC pause and scheduling
	// latency timers are brought up to date (default 10s).
	Interval time.Duration
}

// Set is a registered runtime metric set. Stop ends its sampling goroutine;
// the metrics stay in the registry (the gauges keep working).
type Set struct {
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}

	mu       sync.Mutex
	samples  []metrics.Sample
	counters []*cumulative
	timers   []*histTimer
	buf      []time.Duration
}

type cumulative struct {
	c    *registry.Counter
	last uint64
}

type histTimer struct {
	t    *registry.Timer
	last []uint64 // bucket counts at the previous sample
}

// gaugeDefs maps the instantaneous runtime metrics to names under
// prefix.go.
var gaugeDefs = []struct{ name, metric string }{
	{"goroutines", "/sched/goroutines:goroutines"},
	{"threads", "/sched/threads/total:threads"},
	{"gomaxprocs", "/sched/gomaxprocs:threads"},
	{"memory.total_bytes", "/memory/classes/total:bytes"},
	{"memory.heap_objects_bytes", "/memory/classes/heap/objects:bytes"},
	{"memory.heap_live_bytes", "/gc/heap/live:bytes"},
	{"memory.heap_goal_bytes", "/gc/heap/goal:bytes"},
	{"memory.stacks_bytes", "/memory/classes/heap/stacks:bytes"},
	{"memory.heap_objects", "/gc/heap/objects:objects"},
	{"gc.gogc_percent", "/gc/gogc:percent"},
	{"gc.gomemlimit_bytes", "/gc/gomemlimit:bytes"},
	// Cumulative but fractional: a gauge (see the package comment).
	{"gc.cpu_seconds", "/cpu/classes/gc/total:cpu-seconds"},
}

var counterDefs = []struct{ name, metric string }{
	{"memory.allocated_bytes", "/gc/heap/allocs:bytes"},
	{"memory.allocated_objects", "/gc/heap/allocs:objects"},
	{"gc.cycles", "/gc/cycles/total:gc-cycles"},
}

// timerDefs lists candidates in order of preference: the first the runtime
// has wins (/gc/pauses:seconds is the pre-Go 1.22 name).
var timerDefs = []struct {
	name    string
	metrics []string
}{
	{"gc.pauses", []string{"/sched/pauses/total/gc:seconds", "/gc/pauses:seconds"}},
	{"sched.latencies", []string{"/sched/latencies:seconds"}},
}

var supported = sync.OnceValue(func() map[string]metrics.ValueKind {
	m := map[string]metrics.ValueKind{}
	for _, d := range metrics.All() {
		m[d.Name] = d.Kind
	}
	return m
})

// Register adds the runtime and process metrics under prefix (a valid
// metric name such as "myapp.runtime" or "tapes.host") to r and starts
// the goroutine that keeps the counters and timers current. It fails,
// registering nothing new, if prefix is invalid or a name is already taken
// by a metric of another kind; registering the same prefix twice returns
// a second Set over the same metrics (stop both).
func Register(r *registry.Registry, prefix string, opts Options) (*Set, error) {
	if r == nil {
		return nil, errors.New("runtimemetrics: nil registry")
	}
	if err := wire.ValidateName(prefix); err != nil {
		return nil, fmt.Errorf("runtimemetrics: prefix: %w", err)
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	have := supported()
	type gdef struct {
		name string
		fn   func() float64
	}
	var gauges []gdef
	for _, d := range gaugeDefs {
		if k, ok := have[d.metric]; ok {
			gauges = append(gauges, gdef{prefix + ".go." + d.name, liveGauge(d.metric, k)})
		}
	}
	for _, p := range processGauges() {
		gauges = append(gauges, gdef{prefix + ".process." + p.name, p.fn})
	}
	s := &Set{stop: make(chan struct{}), done: make(chan struct{}), buf: make([]time.Duration, 0, 256)}
	var kinds []registry.Kind
	var names []string
	for _, d := range counterDefs {
		if have[d.metric] == metrics.KindUint64 {
			kinds, names = append(kinds, registry.KindCounter), append(names, prefix+".go."+d.name)
			s.samples = append(s.samples, metrics.Sample{Name: d.metric})
		}
	}
	for _, d := range timerDefs {
		for _, m := range d.metrics {
			if have[m] == metrics.KindFloat64Histogram {
				kinds, names = append(kinds, registry.KindTimer), append(names, prefix+".go."+d.name)
				s.samples = append(s.samples, metrics.Sample{Name: m})
				break
			}
		}
	}
	// Check every name before creating any, so that a conflict leaves the
	// registry as it was.
	for _, g := range gauges {
		if err := free(r, registry.KindGauge, g.name); err != nil {
			return nil, err
		}
	}
	for i, n := range names {
		if err := free(r, kinds[i], n); err != nil {
			return nil, err
		}
	}
	for _, g := range gauges {
		if _, err := r.GaugeFunc(g.name, g.fn); err != nil {
			return nil, fmt.Errorf("runtimemetrics: %w", err)
		}
	}
	for i, n := range names {
		m, err := r.GetOrCreate(kinds[i], n)
		if err != nil {
			return nil, fmt.Errorf("runtimemetrics: %w", err)
		}
		switch x := m.(type) {
		case *registry.Counter:
			s.counters = append(s.counters, &cumulative{c: x})
		case *registry.Timer:
			s.timers = append(s.timers, &histTimer{t: x})
		}
	}
	// Counters start at the runtime's totals since the process started;
	// the timers record what happens from now on.
	s.sample(true)
	go s.run(opts.Interval)
	return s, nil
}

// free reports an error if name exists in r as a metric of another kind.
func free(r *registry.Registry, k registry.Kind, name string) error {
	if m, ok := r.Get(name); ok && m.Kind() != k {
		return fmt.Errorf("runtimemetrics: %s already exists as a %v", name, m.Kind())
	}
	return nil
}

// Stop ends the sampling goroutine and waits for it. The counters and
// timers keep their values; the gauges keep reading the runtime.
func (s *Set) Stop() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

func (s *Set) run(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.sample(false)
		}
	}
}

// sample reads every cumulative metric once and adds what changed since the
// last sample to the counters and timers. With baseline set it only notes
// the timers' starting bucket counts.
func (s *Set) sample(baseline bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	metrics.Read(s.samples)
	for i, c := range s.counters {
		v := s.samples[i].Value.Uint64()
		if v > c.last {
			c.c.Add(int64(v - c.last))
		}
		c.last = v
	}
	for j, ht := range s.timers {
		h := s.samples[len(s.counters)+j].Value.Float64Histogram()
		if baseline || len(ht.last) != len(h.Counts) {
			ht.last = append(ht.last[:0], h.Counts...)
			continue
		}
		for b, n := range h.Counts {
			d := n - ht.last[b]
			ht.last[b] = n
			if d == 0 {
				continue
			}
			v := representative(h.Buckets[b], h.Buckets[b+1])
			for ; d > 0; d-- {
				s.buf = append(s.buf, v)
				if len(s.buf) == cap(s.buf) {
					ht.t.UpdateMany(s.buf)
					s.buf = s.buf[:0]
				}
			}
		}
		if len(s.buf) > 0 {
			ht.t.UpdateMany(s.buf)
			s.buf = s.buf[:0]
		}
	}
}

// representative is the duration recorded for an event that fell in the
// runtime histogram's bucket [lo, hi) seconds: the middle of the bucket,
// or the finite bound of an open end bucket. The runtime's time histograms
// have 4 buckets per power of two (runtime/histogram.go), so the middle is
// within 11% of any value in its bucket: the timers' quantiles, min and
// max carry that error; counts are exact.
func representative(lo, hi float64) time.Duration {
	switch {
	case math.IsInf(lo, -1) || lo < 0:
		lo = 0
	case math.IsInf(hi, 1):
		hi = lo
	}
	return time.Duration((lo + hi) / 2 * 1e9)
}

// liveGauge returns a function reading one runtime metric on every call.
func liveGauge(name string, kind metrics.ValueKind) func() float64 {
	var mu sync.Mutex
	s := []metrics.Sample{{Name: name}}
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		metrics.Read(s)
		switch kind {
		case metrics.KindUint64:
			v := s[0].Value.Uint64()
			if v == math.MaxInt64 || v == math.MaxUint64 {
				// GOMEMLIMIT's "no limit" is MaxInt64: report it as such,
				// not as 9.2e18 bytes.
				return math.Inf(1)
			}
			return float64(v)
		case metrics.KindFloat64:
			return s[0].Value.Float64()
		}
		return math.NaN()
	}
}
