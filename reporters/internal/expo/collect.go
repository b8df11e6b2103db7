package expo

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/mapping"
	"github.com/tapes-go/tapes/wire"
)

var (
	// ErrUnexpressible: the name cannot be written as a Prometheus name.
	ErrUnexpressible = errors.New("name cannot be expressed as a Prometheus metric name")
	// ErrCollision: the metric would write a series that an earlier metric
	// (in registry name order) already writes, or a family of another type.
	ErrCollision = errors.New("name collides with another metric after mapping")
)

// WorkerLabel is the label a per-worker series (a registry name ending in
// ".pid-<pid>", which the shm host gives GaugePerWorker gauges and
// per-worker drop counters) carries instead of a name of its own, so that
// worker restarts add series, not metric names.
const WorkerLabel = "worker"

// Rate families' suffixes, in the order Collect writes them.
var rateSuffixes = [...]string{"_m1_rate", "_m5_rate", "_m15_rate", "_mean_rate"}

// Collect appends r's families to dst[:0] in name order and returns it.
// It fails only when o.Namespace is invalid; a metric that cannot be
// written is left out whole and reported to o.OnSkip.
//
// Names: without a mapping, the namespace, '_', and the registry name with
// '.' and '-' turned into '_' and camelCase into snake_case; with one, the
// namespace, '_' and the mapping's name. Then the type's suffix unless the
// name already ends in it: "_total" for Counter families, "_seconds" for
// timers. Histogram families reserve name_sum, name_count and name_bucket.
func Collect(r *registry.Registry, o Options, dst []Family) ([]Family, error) {
	ns, err := namespace(o.Namespace)
	if err != nil {
		return dst[:0], err
	}
	// Sized up front: growing a map of 10k names rehashes it a dozen
	// times, which cost more than the rest of a scrape's bookkeeping.
	n := r.Len()
	if o.Rates {
		n *= 2 // rate gauges: four more families per meter and timer
	}
	c := collector{o: o, ns: ns, fams: dst[:0], idx: make(map[string]int, n)}
	r.Each(c.metric)
	for i := range c.fams {
		f := &c.fams[i]
		slices.SortStableFunc(f.Samples, func(a, b Sample) int { return compareLabels(a.Labels, b.Labels) })
	}
	slices.SortFunc(c.fams, func(a, b Family) int { return cmp.Compare(a.Name, b.Name) })
	return c.fams, nil
}

type namespaceError struct{ err error }

func (e *namespaceError) Error() string { return "invalid namespace: " + e.err.Error() }
func (e *namespaceError) Unwrap() error { return e.err }

func namespace(ns string) (string, error) {
	if ns == "" {
		return "", nil
	}
	if err := wire.ValidateName(ns); err != nil {
		return "", &namespaceError{err}
	}
	b := string(AppendSnake(nil, ns))
	if !validStart(b) {
		return "", &namespaceError{fmt.Errorf("%q: %w", ns, ErrUnexpressible)}
	}
	return b + "_", nil
}

type collector struct {
	o    Options
	ns   string
	fams []Family
	idx  map[string]int // family name -> index in fams
	buf  []byte         // scratch for names looked up, not kept

	// Slabs: one allocation per slabSize families or snapshots instead of
	// one each.
	samples []Sample
	snaps   []registry.HistogramSnapshot
}

const slabSize = 256

// newSamples returns an empty Samples slice for a new family.
func (c *collector) newSamples() []Sample {
	if len(c.samples) == 0 {
		c.samples = make([]Sample, slabSize)
	}
	s := c.samples[:0:1]
	c.samples = c.samples[1:]
	return s
}

// snapshot stores s where a Sample can point to it.
func (c *collector) snapshot(s registry.HistogramSnapshot) *registry.HistogramSnapshot {
	if len(c.snaps) == 0 {
		c.snaps = make([]registry.HistogramSnapshot, slabSize)
	}
	p := &c.snaps[0]
	*p = s
	c.snaps = c.snaps[1:]
	return p
}

func (c *collector) skip(name string, err error) {
	if c.o.OnSkip != nil {
		c.o.OnSkip(name, err)
	}
}

func (c *collector) metric(name string, m registry.Metric) {
	kind := m.Kind()
	path, worker := splitWorker(name)
	base, labels, help, err := c.base(path, kind)
	if err != nil {
		if !errors.Is(err, errDropped) {
			c.skip(name, err)
		}
		return
	}
	if worker != "" {
		if slices.ContainsFunc(labels, func(l mapping.Label) bool { return l.Name == WorkerLabel }) {
			c.skip(name, fmt.Errorf("%w: the mapping already sets label %q", ErrCollision, WorkerLabel))
			return
		}
		labels = insertLabel(labels, mapping.Label{Name: WorkerLabel, Value: worker})
	}
	// A help text from the mapping is the user's and is used as is; the
	// default one says where the family comes from.
	mine := help == ""
	kindName := kind.String()
	// more builds a family's help text, in one allocation.
	more := func(s string) string {
		if mine {
			return path + " (" + kindName + ")" + s
		}
		return help
	}

	// Plan every family the metric writes before adding any, so that it is
	// written whole or not at all.
	type part struct {
		name, unit, help string
		typ              Type
		s                Sample
	}
	var parts [1 + len(rateSuffixes)]part
	n := 0
	add := func(name, unit, help string, typ Type, s Sample) {
		parts[n] = part{name, unit, help, typ, s}
		n++
	}
	src := Sample{Labels: labels, Source: name}
	rates := func(stem string, s registry.MeterSnapshot) {
		if !c.o.Rates {
			return
		}
		// The four names, and the four help texts, are each cut from one
		// allocation: rates would otherwise double a scrape's garbage.
		h := help
		if mine {
			h = path + " (" + kindName + ")"
		}
		var nb, hb strings.Builder
		nb.Grow(4*len(stem) + len("_m1_rate_m5_rate_m15_rate_mean_rate"))
		hb.Grow(4*len(h) + len(rateHelp[0]+rateHelp[1]+rateHelp[2]+rateHelp[3]))
		var ne, he [len(rateSuffixes)]int
		for i := range rateSuffixes {
			nb.WriteString(stem)
			nb.WriteString(rateSuffixes[i])
			ne[i] = nb.Len()
			hb.WriteString(h)
			hb.WriteString(rateHelp[i])
			he[i] = hb.Len()
		}
		names, helps := nb.String(), hb.String()
		for i, v := range [...]float64{s.M1, s.M5, s.M15, s.MeanRate} {
			rs := src
			rs.Value = v
			n0, h0 := 0, 0
			if i > 0 {
				n0, h0 = ne[i-1], he[i-1]
			}
			add(names[n0:ne[i]], "", helps[h0:he[i]], Gauge, rs)
		}
	}
	switch m := m.(type) {
	case *registry.Counter:
		s := src
		s.Value = float64(m.Value())
		if c.o.CountersMonotonic {
			add(withSuffix(base, "_total"), "", more(""), Counter, s)
		} else {
			add(base, "", more(""), Gauge, s)
		}
	case *registry.Gauge:
		s := src
		s.Value = m.Value()
		add(base, "", more(""), Gauge, s)
	case *registry.Meter:
		ms := m.Snapshot()
		s := src
		s.Value = float64(ms.Count)
		stem := strings.TrimSuffix(base, "_total")
		add(stem+"_total", "", more(": events marked"), Counter, s)
		rates(stem, ms)
	case *registry.Histogram:
		s := src
		s.Snapshot, s.Native = c.snapshot(m.Snapshot()), c.native(m)
		add(base, "", more(""), Histogram, s)
	case *registry.Timer:
		s := src
		snap := m.Snapshot()
		s.Snapshot, s.Native = c.snapshot(snap.HistogramSnapshot), c.native(m.Histogram())
		stem := strings.TrimSuffix(base, "_seconds")
		add(stem+"_seconds", "seconds", more(": durations in seconds"), Histogram, s)
		rates(stem, snap.Rates)
	default:
		c.skip(name, fmt.Errorf("%w: unknown kind %v", ErrUnexpressible, kind))
		return
	}

	for _, p := range parts[:n] {
		if err := c.check(p.name, p.typ, labels); err != nil {
			c.skip(name, err)
			return
		}
	}
	for _, p := range parts[:n] {
		i, ok := c.idx[p.name]
		if !ok {
			i = len(c.fams)
			c.idx[p.name] = i
			c.fams = append(c.fams, Family{Name: p.name, Unit: p.unit, Help: p.help, Type: p.typ, Samples: c.newSamples()})
		}
		c.fams[i].Samples = append(c.fams[i].Samples, p.s)
	}
}

func (c *collector) native(h *registry.Histogram) *registry.NativeHistogram {
	if c.o.SkipNative {
		return nil
	}
	n := h.Native()
	return &n
}

var rateHelp = [...]string{", 1-minute rate, events/s", ", 5-minute rate, events/s", ", 15-minute rate, events/s", ", mean rate since start, events/s"}

// Reserved names: a family reserves the names its samples use in the text
// formats (its own; a histogram's name_sum, name_count and name_bucket),
// and a counter also the name OpenMetrics gives its family (without
// "_total"), which a gauge of that name would duplicate there. Two
// families' reserved names must not meet. They are not stored: whether a
// name is reserved is read off the families by name (taken), without
// allocating.
var histSuffixes = [...]string{"_sum", "_count", "_bucket"}

// taken reports which family, if any, reserves the output name o.
func (c *collector) taken(o []byte) (string, bool) {
	if i, ok := c.idx[string(o)]; ok {
		return c.fams[i].Name, true
	}
	for _, sfx := range histSuffixes {
		if stem, ok := bytes.CutSuffix(o, []byte(sfx)); ok {
			if i, ok := c.idx[string(stem)]; ok && c.fams[i].Type == Histogram {
				return c.fams[i].Name, true
			}
		}
	}
	// Counter families end in "_total": a counter named o_total reserves o.
	c.buf = append(append(c.buf[:0], o...), "_total"...)
	if i, ok := c.idx[string(c.buf)]; ok && c.fams[i].Type == Counter {
		return c.fams[i].Name, true
	}
	return "", false
}

// check reports why a sample with labels cannot join family name of type t.
func (c *collector) check(name string, t Type, labels []mapping.Label) error {
	if i, ok := c.idx[name]; ok {
		f := &c.fams[i]
		if f.Type != t {
			return fmt.Errorf("%w: %s is already a %s family (from %q)", ErrCollision, name, typeName(f.Type), f.Samples[0].Source)
		}
		for _, s := range f.Samples {
			if compareLabels(s.Labels, labels) == 0 {
				return fmt.Errorf("%w: %s%s is already written for %q", ErrCollision, name, labelString(labels), s.Source)
			}
		}
		return nil
	}
	// A new family: none of the names it reserves may be reserved by
	// another.
	var scratch [128]byte
	o := append(scratch[:0], name...)
	if other, ok := c.taken(o); ok {
		return fmt.Errorf("%w: %s is already written by family %s", ErrCollision, name, other)
	}
	switch t {
	case Histogram:
		for _, sfx := range histSuffixes {
			o = append(o[:len(name)], sfx...)
			if other, ok := c.taken(o); ok {
				return fmt.Errorf("%w: %s is already written by family %s", ErrCollision, o, other)
			}
		}
	case Counter:
		if stem, ok := strings.CutSuffix(name, "_total"); ok {
			if other, ok := c.taken(o[:len(stem)]); ok {
				return fmt.Errorf("%w: %s is already written by family %s", ErrCollision, stem, other)
			}
		}
	}
	return nil
}

var errDropped = errors.New("dropped by the mapping")

// base is the family name stem of a registry path, its labels and help.
func (c *collector) base(path string, kind wire.Kind) (string, []mapping.Label, string, error) {
	if res, ok := c.o.Mapper.Map(path, kind); ok {
		if res.Drop {
			return "", nil, "", errDropped
		}
		if !ValidMetricName(res.Name) {
			return "", nil, "", fmt.Errorf("%w: the mapping gives %q", ErrUnexpressible, res.Name)
		}
		for _, l := range res.Labels {
			if !ValidLabelName(l.Name) || l.Name == "le" || l.Name == "quantile" {
				return "", nil, "", fmt.Errorf("%w: the mapping gives label name %q", ErrUnexpressible, l.Name)
			}
		}
		return c.ns + res.Name, res.Labels, res.Help, nil
	}
	// One allocation: the name is built in scratch space.
	c.buf = AppendSnake(append(c.buf[:0], c.ns...), path)
	if c.ns == "" && !validStart(c.buf) {
		return "", nil, "", fmt.Errorf("%w: %q would start with a digit or \"__\"", ErrUnexpressible, path)
	}
	return string(c.buf), nil, "", nil
}

// splitWorker splits "name.pid-123" into "name" and "123".
func splitWorker(name string) (string, string) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || !strings.HasPrefix(name[i+1:], "pid-") {
		return name, ""
	}
	pid := name[i+1+len("pid-"):]
	if pid == "" || len(pid) > 10 || strings.Trim(pid, "0123456789") != "" {
		return name, ""
	}
	return name[:i], pid
}

func withSuffix(name, sfx string) string {
	if strings.HasSuffix(name, sfx) {
		return name
	}
	return name + sfx
}

func insertLabel(ls []mapping.Label, l mapping.Label) []mapping.Label {
	i, _ := slices.BinarySearchFunc(ls, l.Name, func(a mapping.Label, n string) int { return cmp.Compare(a.Name, n) })
	out := make([]mapping.Label, 0, len(ls)+1)
	out = append(out, ls[:i]...)
	out = append(out, l)
	return append(out, ls[i:]...)
}

func compareLabels(a, b []mapping.Label) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := cmp.Compare(a[i].Name, b[i].Name); c != 0 {
			return c
		}
		if c := cmp.Compare(a[i].Value, b[i].Value); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(a), len(b))
}

func labelString(ls []mapping.Label) string {
	if len(ls) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", l.Name, l.Value)
	}
	b.WriteByte('}')
	return b.String()
}

func typeName(t Type) string {
	switch t {
	case Counter:
		return "counter"
	case Gauge:
		return "gauge"
	case Histogram:
		return "histogram"
	}
	return "unknown"
}

// String is the type's Prometheus name.
func (t Type) String() string { return typeName(t) }

// AppendSnake maps a registry name (A-Z a-z 0-9 _ - and dots) to
// Prometheus snake_case: '.' and '-' become '_', and an upper-case letter
// becomes lower case, after a '_' when it follows a lower-case letter or a
// digit ("httpRequests" -> "http_requests"), because promtool flags
// camelCase.
func AppendSnake(dst []byte, name string) []byte {
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.' || c == '-':
			c = '_'
		case c >= 'A' && c <= 'Z':
			if i > 0 {
				if p := name[i-1]; p >= 'a' && p <= 'z' || p >= '0' && p <= '9' {
					dst = append(dst, '_')
				}
			}
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

func validStart[S string | []byte](b S) bool {
	if len(b) == 0 || b[0] >= '0' && b[0] <= '9' {
		return false
	}
	return !(len(b) >= 2 && b[0] == '_' && b[1] == '_')
}

// ValidMetricName: [a-zA-Z_:][a-zA-Z0-9_:]*, not starting with "__".
func ValidMetricName(s string) bool {
	if s == "" || strings.HasPrefix(s, "__") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// ValidLabelName: [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved
// for Prometheus' own labels).
func ValidLabelName(s string) bool {
	if s == "" || strings.HasPrefix(s, "__") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
