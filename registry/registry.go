package registry

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapes-go/tapes/wire"
)

// Metric is implemented by *Counter, *Gauge, *Meter, *Timer and *Histogram.
// Reporters switch on the concrete type to read a typed snapshot.
type Metric interface {
	Kind() Kind
	// appendStats adds the metric's Stats leaf values; unexported so that
	// the five kinds stay the only metrics.
	stats() map[string]any
}

// DefaultWindow is how much recent history histogram and timer values other
// than count describe, unless WithWindow says otherwise.
const DefaultWindow = 5 * time.Minute

// Registry holds named metrics. The zero value is not usable; call New.
// All methods are safe for concurrent use. Lookups of existing metrics take
// no lock.
type Registry struct {
	clock  Clock
	window time.Duration
	max    int

	byName sync.Map // string -> Metric

	mu     sync.Mutex
	names  *wire.Names             // the name rule, kinds and paths of every metric
	all    []entry                 // guarded by mu, in creation order
	n      atomic.Int64            // len(all), for Len without the lock
	sorted atomic.Pointer[[]entry] // all sorted by name, built by Each on demand; nil when stale
}

type entry struct {
	name string
	m    Metric
}

// Option configures a Registry.
type Option func(*Registry)

// WithClock injects the time source used by meters, timers and windows.
func WithClock(c Clock) Option { return func(r *Registry) { r.clock = c } }

// WithWindow sets how much recent history the non-count values of
// histograms and timers describe. Values are kept in two halves; what is
// reported covers between window/2 and window of history, and reads 0 once
// a whole window passes without events. Default DefaultWindow; minimum 2s.
func WithWindow(d time.Duration) Option {
	return func(r *Registry) {
		if d < 2*time.Second {
			d = 2 * time.Second
		}
		r.window = d
	}
}

// WithMaxMetrics caps the number of metrics; creating one more fails with
// ErrTooManyMetrics (the convenience methods panic). 0 means no limit. Hosts
// that register names coming from other processes use it to bound memory.
func WithMaxMetrics(n int) Option { return func(r *Registry) { r.max = n } }

// New returns an empty registry.
func New(opts ...Option) *Registry {
	r := &Registry{window: DefaultWindow}
	for _, o := range opts {
		o(r)
	}
	r.names = wire.NewNames(r.max)
	return r
}

// Default is the registry behind the root package's convenience functions.
var Default = New()

// Window returns the histogram window of the registry.
func (r *Registry) Window() time.Duration { return r.window }

// Counter returns the counter called name, creating it if needed. It panics
// if the name is invalid or used by another kind; use GetOrCreate for names
// that do not come from the program's own source.
func (r *Registry) Counter(name string) *Counter { return must[*Counter](r, KindCounter, name, nil) }

// Meter returns the meter called name, creating it if needed; it panics like Counter.
func (r *Registry) Meter(name string) *Meter { return must[*Meter](r, KindMeter, name, nil) }

// Timer returns the timer called name, creating it if needed; it panics like Counter.
func (r *Registry) Timer(name string) *Timer { return must[*Timer](r, KindTimer, name, nil) }

// Histogram returns the histogram called name, creating it if needed; it panics like Counter.
func (r *Registry) Histogram(name string) *Histogram {
	return must[*Histogram](r, KindHistogram, name, nil)
}

// Gauge returns the gauge called name, creating it if needed. A non-nil fn is
// called on every read of a new gauge; a nil fn gives a gauge set with Set.
// An existing gauge is returned as it is (the first fn stays). It panics like
// Counter.
func (r *Registry) Gauge(name string, fn func() float64) *Gauge {
	return must[*Gauge](r, KindGauge, name, fn)
}

func must[T Metric](r *Registry, k Kind, name string, fn func() float64) T {
	m, err := r.getOrCreate(k, name, fn)
	if err != nil {
		panic(err)
	}
	return m.(T)
}

// GetOrCreate is the error-returning form of the typed accessors, for names
// that come from other processes or guests. It never panics; errors are
// *NameError values wrapping ErrInvalidName, ErrKindConflict,
// ErrPrefixConflict, ErrInvalidKind or ErrTooManyMetrics.
func (r *Registry) GetOrCreate(k Kind, name string) (Metric, error) {
	return r.getOrCreate(k, name, nil)
}

// GaugeFunc is the error-returning form of Gauge.
func (r *Registry) GaugeFunc(name string, fn func() float64) (*Gauge, error) {
	m, err := r.getOrCreate(KindGauge, name, fn)
	if err != nil {
		return nil, err
	}
	return m.(*Gauge), nil
}

// Get returns the metric called name, if any.
func (r *Registry) Get(name string) (Metric, bool) {
	m, ok := r.byName.Load(name)
	if !ok {
		return nil, false
	}
	return m.(Metric), true
}

// existing returns the metric called name if it has kind k, an error if it
// has another, and neither if there is none.
func (r *Registry) existing(k Kind, name string) (Metric, error) {
	m, ok := r.byName.Load(name)
	if !ok {
		return nil, nil
	}
	if mm := m.(Metric); mm.Kind() != k {
		return nil, &NameError{Name: name, Kind: k, Existing: mm.Kind(), Err: ErrKindConflict}
	}
	return m.(Metric), nil
}

func (r *Registry) getOrCreate(k Kind, name string, fn func() float64) (Metric, error) {
	if m, err := r.existing(k, name); m != nil || err != nil {
		return m, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m, _, err := r.getOrCreateLocked(k, name, fn)
	return m, err
}

// getOrCreateAll gets or creates every metric of kinds[i] called names[i],
// or none: on the first rejected name it removes the metrics it created,
// under the same lock, and returns that name's index with the error. Bind
// uses it so that one bad field leaves nothing behind; later names are
// checked against earlier ones by the same rules as against the registry.
func (r *Registry) getOrCreateAll(kinds []Kind, names []string) ([]Metric, int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ms := make([]Metric, len(names))
	var made []string
	for i, name := range names {
		m, created, err := r.getOrCreateLocked(kinds[i], name, nil)
		if err != nil {
			for _, n := range made {
				r.removeLocked(n)
			}
			return nil, i, err
		}
		if created {
			made = append(made, name)
		}
		ms[i] = m
	}
	return ms, -1, nil
}

// getOrCreateLocked is getOrCreate with r.mu held; created reports whether
// the metric is new.
func (r *Registry) getOrCreateLocked(k Kind, name string, fn func() float64) (m Metric, created bool, err error) {
	if m, err := r.existing(k, name); m != nil || err != nil { // or lost a race with another creator
		return m, false, err
	}
	if _, err := r.names.Add(k, name); err != nil {
		return nil, false, err
	}
	m = r.newMetric(k, fn)
	// Creation appends and invalidates the sorted view instead of keeping
	// it sorted: copying a sorted slice per creation made 10,000 metrics
	// cost O(n²) (1.5 GB of garbage); Each re-sorts once per change batch.
	r.all = append(r.all, entry{name, m})
	r.n.Store(int64(len(r.all)))
	r.sorted.Store(nil)
	r.byName.Store(name, m)
	return m, true, nil
}

func (r *Registry) newMetric(k Kind, fn func() float64) Metric {
	switch k {
	case KindCounter:
		return &Counter{}
	case KindGauge:
		return &Gauge{fn: fn}
	case KindMeter:
		m := &Meter{clock: r.clock}
		m.startAt(nanosOf(r.clock))
		return m
	case KindTimer:
		t := &Timer{h: Histogram{clock: r.clock, window: r.window}}
		t.startAt(nanosOf(r.clock))
		return t
	default:
		return &Histogram{clock: r.clock, window: r.window}
	}
}

// Unregister removes the metric called name and reports whether it existed.
// Handles already held keep working but are no longer reported. Hosts use it
// to retire per-worker series.
func (r *Registry) Unregister(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removeLocked(name)
}

func (r *Registry) removeLocked(name string) bool {
	if _, ok := r.byName.LoadAndDelete(name); !ok {
		return false
	}
	r.names.Remove(name)
	i := slices.IndexFunc(r.all, func(e entry) bool { return e.name == name })
	r.all = slices.Delete(r.all, i, i+1)
	r.n.Store(int64(len(r.all)))
	r.sorted.Store(nil)
	return true
}

// Len returns the number of metrics.
func (r *Registry) Len() int { return int(r.n.Load()) }

// sortedLocked returns the metrics sorted by name, building the view if a
// creation or removal made it stale. r.mu must be held.
func (r *Registry) sortedLocked() []entry {
	if p := r.sorted.Load(); p != nil {
		return *p
	}
	s := slices.Clone(r.all)
	sort.Slice(s, func(i, j int) bool { return s[i].name < s[j].name })
	r.sorted.Store(&s)
	return s
}

// Each calls f for every metric in name order. It works on a snapshot of the
// metric set, so f may create metrics (they are not visited) without
// deadlocking.
func (r *Registry) Each(f func(name string, m Metric)) {
	p := r.sorted.Load()
	if p == nil {
		r.mu.Lock()
		s := r.sortedLocked()
		r.mu.Unlock()
		p = &s
	}
	for _, e := range *p {
		f(e.name, e.m)
	}
}

// Stats returns the nested tree tapes' get_stats() returned: names are split
// on '.', and each leaf maps the metric's keys to its values. json.Marshal
// of it gives e.g. {"my":{"timer":{"count":0,"m1":0,...}}}.
//
// Values are as read: a gauge whose function returns NaN or ±Inf puts that
// float in the tree, and encoding/json then refuses the whole tree. The
// httpjson and stream reporters write such values as null; use them (or
// check gauges) when gauge functions can return non-finite values.
func (r *Registry) Stats() map[string]any {
	root := map[string]any{}
	r.Each(func(name string, m Metric) {
		node := root
		for {
			i := strings.IndexByte(name, '.')
			if i < 0 {
				break
			}
			child, ok := node[name[:i]].(map[string]any)
			if !ok {
				child = map[string]any{}
				node[name[:i]] = child
			}
			node, name = child, name[i+1:]
		}
		node[name] = m.stats()
	})
	return root
}
