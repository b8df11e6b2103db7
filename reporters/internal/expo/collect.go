package expo

import (
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
	c := collector{o: o, ns: ns, fams: dst[:0], idx: map[string]int{}, owner: map[string]string{}}
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
	// owner: every output name a family reserves (its own, and a
	// histogram's _sum/_count/_bucket) -> the family that reserves it.
	owner map[string]string
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
	if mine {
		help = path + " (" + kind.String() + ")"
	}
	more := func(s string) string {
		if mine {
			return help + s
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
		for i, v := range [...]float64{s.M1, s.M5, s.M15, s.MeanRate} {
			rs := src
			rs.Value = v
			add(stem+rateSuffixes[i], "", help+", "+rateHelp[i], Gauge, rs)
		}
	}
	switch m := m.(type) {
	case *registry.Counter:
		s := src
		s.Value = float64(m.Value())
		if c.o.CountersMonotonic {
			add(withSuffix(base, "_total"), "", help, Counter, s)
		} else {
			add(base, "", help, Gauge, s)
		}
	case *registry.Gauge:
		s := src
		s.Value = m.Value()
		add(base, "", help, Gauge, s)
	case *registry.Meter:
		ms := m.Snapshot()
		s := src
		s.Value = float64(ms.Count)
		stem := strings.TrimSuffix(base, "_total")
		add(stem+"_total", "", more(": events marked"), Counter, s)
		rates(stem, ms)
	case *registry.Histogram:
		s := src
		snap := m.Snapshot()
		s.Snapshot, s.Native = &snap, c.native(m)
		add(base, "", help, Histogram, s)
	case *registry.Timer:
		s := src
		snap := m.Snapshot()
		s.Snapshot, s.Native = &snap.HistogramSnapshot, c.native(m.Histogram())
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
			c.fams = append(c.fams, Family{Name: p.name, Unit: p.unit, Help: p.help, Type: p.typ})
			for _, o := range outputs(p.name, p.typ) {
				c.owner[o] = p.name
			}
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

var rateHelp = [...]string{"1-minute rate, events/s", "5-minute rate, events/s", "15-minute rate, events/s", "mean rate since start, events/s"}

// outputs are the names a family's samples use in the text formats.
func outputs(name string, t Type) []string {
	if t == Histogram {
		return []string{name, name + "_sum", name + "_count", name + "_bucket"}
	}
	return []string{name}
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
	for _, o := range outputs(name, t) {
		if other, ok := c.owner[o]; ok {
			return fmt.Errorf("%w: %s is already written by family %s", ErrCollision, o, other)
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
	b := string(AppendSnake(nil, path))
	if c.ns == "" && !validStart(b) {
		return "", nil, "", fmt.Errorf("%w: %q would start with a digit or \"__\"", ErrUnexpressible, path)
	}
	return c.ns + b, nil, "", nil
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

func validStart(b string) bool {
	if len(b) == 0 || b[0] >= '0' && b[0] <= '9' {
		return false
	}
	return !strings.HasPrefix(b, "__")
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
