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
// written is left out whole and reported to o.OnSkip. A Collector does the
// same reusing its memory from call to call.
//
// Names: without a mapping, the namespace, '_', and the registry name with
// '.' and '-' turned into '_' and camelCase into snake_case; with one, the
// namespace, '_' and the mapping's name. Then the type's suffix unless the
// name already ends in it: "_total" for Counter families, "_seconds" for
// timers. Histogram families reserve name_sum, name_count and name_bucket.
func Collect(r *registry.Registry, o Options, dst []Family) ([]Family, error) {
	c := Collector{fams: dst[:0]}
	return c.Collect(r, o)
}

// Collector collects families like Collect, keeping its memory for the
// next call: a scrape loop that keeps one allocates little more than the
// families' names. What a call returns (families, samples and the
// snapshots and buckets they point to) is valid until the next call.
// A Collector is not safe for concurrent use.
type Collector struct {
	o       Options
	ns      string
	fams    []Family
	info    []famInfo
	idx     map[string]int32  // family name -> index in fams
	names   map[string]string // the last calls' family names, reused
	flat    []flatSample      // samples in registry order
	samples []Sample          // the same, grouped by family
	snaps   []registry.HistogramSnapshot
	nats    []registry.NativeHistogram
	buf     []byte
}

type famInfo struct {
	n         int32             // samples so far
	unlabeled string            // the source of the unlabeled sample, if any
	labelled  map[string]string // label string -> source, for labelled samples
}

type flatSample struct {
	fam int32
	s   Sample
}

// Collect is the package's Collect on c's memory.
func (c *Collector) Collect(r *registry.Registry, o Options) ([]Family, error) {
	ns, err := namespace(o.Namespace)
	if err != nil {
		return c.fams[:0], err
	}
	c.o, c.ns = o, ns
	if c.names == nil || len(c.names) > 2*len(c.fams)+1024 {
		c.names = map[string]string{} // forget the names of removed metrics
	}
	c.fams, c.info, c.flat, c.snaps, c.nats = c.fams[:0], c.info[:0], c.flat[:0], c.snaps[:0], c.nats[:0]
	if c.idx == nil {
		c.idx = map[string]int32{}
	}
	clear(c.idx)
	r.Each(c.metric)

	// Group the samples by family, in registry order within each.
	starts := make([]int32, len(c.fams)+1)
	for _, f := range c.flat {
		starts[f.fam+1]++
	}
	for i := 1; i < len(starts); i++ {
		starts[i] += starts[i-1]
	}
	c.samples = slices.Grow(c.samples[:0], len(c.flat))[:len(c.flat)]
	next := slices.Clone(starts[:len(c.fams)])
	for _, f := range c.flat {
		c.samples[next[f.fam]] = f.s
		next[f.fam]++
	}
	for i := range c.fams {
		ss := c.samples[starts[i]:starts[i+1]:starts[i+1]]
		if len(ss) > 1 {
			slices.SortStableFunc(ss, func(a, b Sample) int { return compareLabels(a.Labels, b.Labels) })
		}
		c.fams[i].Samples = ss
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

func (c *Collector) skip(name string, err error) {
	if c.o.OnSkip != nil {
		c.o.OnSkip(name, err)
	}
}

// Default help tails, after the registry name: constant, so that families
// without a help text from the mapping cost no allocation for it.
var (
	kindTail = [...]string{
		registry.KindCounter:   " (counter)",
		registry.KindGauge:     " (gauge)",
		registry.KindMeter:     " (meter): events marked",
		registry.KindTimer:     " (timer): durations in seconds",
		registry.KindHistogram: " (histogram)",
	}
	rateTail = [2][4]string{
		{" (meter), 1-minute rate, events/s", " (meter), 5-minute rate, events/s", " (meter), 15-minute rate, events/s", " (meter), mean rate since start, events/s"},
		{" (timer), 1-minute rate, events/s", " (timer), 5-minute rate, events/s", " (timer), 15-minute rate, events/s", " (timer), mean rate since start, events/s"},
	}
	rateHelp = [...]string{", 1-minute rate, events/s", ", 5-minute rate, events/s", ", 15-minute rate, events/s", ", mean rate since start, events/s"}
)

// part is one family a metric writes; its name is buf[off:end].
type part struct {
	off, end int
	unit     string
	help     string // the user's, or ""
	tail     string // the default help's tail
	typ      Type
	s        Sample
}

func (c *Collector) metric(name string, m registry.Metric) {
	kind := m.Kind()
	path, worker := splitWorker(name)
	c.buf = c.buf[:0]
	stem, res, err := c.base(path, kind)
	labels, help := res.Labels, res.Help
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

	// Plan every family the metric writes before adding any, so that it is
	// written whole or not at all. c.buf[:stem] is the name stem.
	var parts [1 + len(rateSuffixes)]part
	n := 0
	add := func(trim, sfx, unit, tail string, typ Type, s Sample) {
		off := len(c.buf)
		b := c.buf[:stem]
		if trim != "" && len(b) > len(trim) && string(b[len(b)-len(trim):]) == trim {
			b = b[:len(b)-len(trim)]
		}
		c.buf = append(append(c.buf, b...), sfx...)
		parts[n] = part{off: off, end: len(c.buf), unit: unit, help: help, tail: tail, typ: typ, s: s}
		n++
	}
	src := Sample{Labels: labels, Source: name}
	rates := func(trim string, timer int, s registry.MeterSnapshot) {
		if !c.o.Rates {
			return
		}
		for i, v := range [...]float64{s.M1, s.M5, s.M15, s.MeanRate} {
			rs := src
			rs.Value = v
			add(trim, rateSuffixes[i], "", rateTail[timer][i], Gauge, rs)
			if help != "" {
				parts[n-1].help = help + rateHelp[i]
			}
		}
	}
	switch m := m.(type) {
	case *registry.Counter:
		s := src
		s.Value = float64(m.Value())
		if c.o.CountersMonotonic {
			add("_total", "_total", "", kindTail[kind], Counter, s)
		} else {
			add("", "", "", kindTail[kind], Gauge, s)
		}
	case *registry.Gauge:
		s := src
		s.Value = m.Value()
		add("", "", "", kindTail[kind], Gauge, s)
	case *registry.Meter:
		ms := m.Snapshot()
		s := src
		s.Value = float64(ms.Count)
		add("_total", "_total", "", kindTail[kind], Counter, s)
		rates("_total", 0, ms)
	case *registry.Histogram:
		s := src
		c.snaps = append(c.snaps, m.Snapshot())
		s.Snapshot, s.Native = &c.snaps[len(c.snaps)-1], c.native(m, &res)
		s.Quantiles = quantiles(m, &res)
		add("", "", "", kindTail[kind], Histogram, s)
	case *registry.Timer:
		s := src
		ts := m.Snapshot()
		c.snaps = append(c.snaps, ts.HistogramSnapshot)
		s.Snapshot, s.Native = &c.snaps[len(c.snaps)-1], c.native(m.Histogram(), &res)
		s.Quantiles = quantiles(m.Histogram(), &res)
		add("_seconds", "_seconds", "seconds", kindTail[kind], Histogram, s)
		rates("_seconds", 1, ts.Rates)
	default:
		c.skip(name, fmt.Errorf("%w: unknown kind %v", ErrUnexpressible, kind))
		return
	}

	for _, p := range parts[:n] {
		if err := c.check(c.buf[p.off:p.end], p.typ, labels); err != nil {
			c.skip(name, err)
			return
		}
	}
	for _, p := range parts[:n] {
		fname := c.buf[p.off:p.end]
		i, ok := c.idx[string(fname)]
		if !ok {
			i = int32(len(c.fams))
			fn, seen := c.names[string(fname)]
			if !seen {
				fn = string(fname)
				c.names[fn] = fn
			}
			f := Family{Name: fn, Unit: p.unit, Help: p.help, Type: p.typ, src: path, tail: p.tail}
			if p.typ == Histogram {
				f.Observer, f.Buckets, f.Quantiles = res.Observer, res.Buckets, res.Quantiles
			}
			c.idx[f.Name] = i
			c.fams = append(c.fams, f)
			c.info = append(c.info, famInfo{})
		}
		in := &c.info[i]
		in.n++
		if len(labels) == 0 {
			in.unlabeled = name
		} else {
			if in.labelled == nil {
				in.labelled = map[string]string{}
			}
			in.labelled[labelString(labels)] = name
		}
		c.flat = append(c.flat, flatSample{fam: i, s: p.s})
	}
}

// quantiles are the window's quantiles a mapping asks a summary for, or
// nil for the registry's own (Snapshot.Quantiles).
func quantiles(h *registry.Histogram, res *mapping.Result) []float64 {
	if res.Observer != mapping.ObserverSummary || len(res.Quantiles) == 0 {
		return nil
	}
	sk := h.Sketch()
	out := make([]float64, len(res.Quantiles))
	for i, q := range res.Quantiles {
		out[i] = sk.Quantile(q)
	}
	return out
}

func (c *Collector) native(h *registry.Histogram, res *mapping.Result) *registry.NativeHistogram {
	// A mapping asking for classic buckets needs the native ones to count
	// them, whatever the output otherwise writes.
	if c.o.SkipNative && res.Observer != mapping.ObserverHistogram {
		return nil
	}
	if len(c.nats) < cap(c.nats) {
		c.nats = c.nats[:len(c.nats)+1] // reuse the last call's bucket slices
	} else {
		c.nats = append(c.nats, registry.NativeHistogram{})
	}
	n := &c.nats[len(c.nats)-1]
	h.NativeInto(n)
	return n
}

// Suffixes of the series a histogram family writes besides its own name.
var histogramOutputs = [...]string{"_sum", "_count", "_bucket"}

// check reports why a sample with labels cannot join family name of type t.
func (c *Collector) check(name []byte, t Type, labels []mapping.Label) error {
	if i, ok := c.idx[string(name)]; ok {
		f, in := &c.fams[i], &c.info[i]
		if f.Type != t {
			return fmt.Errorf("%w: %s is already a %s family (from %q)", ErrCollision, name, typeName(f.Type), f.src)
		}
		if len(labels) == 0 && in.unlabeled != "" {
			return fmt.Errorf("%w: %s is already written for %q", ErrCollision, name, in.unlabeled)
		}
		if len(labels) > 0 {
			ls := labelString(labels)
			if src, dup := in.labelled[ls]; dup {
				return fmt.Errorf("%w: %s%s is already written for %q", ErrCollision, name, ls, src)
			}
		}
		return nil
	}
	// A new family: none of its series may be another family's.
	// OpenMetrics names a counter's family without "_total": a family of
	// that name would be a second family of the same name there.
	k := len(c.buf)
	c.buf = append(append(c.buf, name...), "_total"...)
	i, ok := c.idx[string(c.buf[k:])]
	c.buf = c.buf[:k]
	if ok && c.fams[i].Type == Counter {
		return fmt.Errorf("%w: %s is the OpenMetrics family of counter %s", ErrCollision, name, c.fams[i].Name)
	}
	if stem, ok := bytes.CutSuffix(name, []byte("_total")); ok && t == Counter {
		if _, ok := c.idx[string(stem)]; ok {
			return fmt.Errorf("%w: %s is already a family, which OpenMetrics would name %s too", ErrCollision, stem, name)
		}
	}
	for _, sfx := range histogramOutputs {
		if len(name) > len(sfx) && string(name[len(name)-len(sfx):]) == sfx {
			if i, ok := c.idx[string(name[:len(name)-len(sfx)])]; ok && c.fams[i].Type == Histogram {
				return fmt.Errorf("%w: %s is a series of histogram family %s", ErrCollision, name, c.fams[i].Name)
			}
		}
		if t == Histogram {
			k := len(c.buf)
			c.buf = append(append(c.buf, name...), sfx...)
			_, ok := c.idx[string(c.buf[k:])]
			c.buf = c.buf[:k]
			if ok {
				return fmt.Errorf("%w: %s%s is already a family of its own", ErrCollision, name, sfx)
			}
		}
	}
	return nil
}

var errDropped = errors.New("dropped by the mapping")

// base appends the family name stem of a registry path to c.buf (empty on
// entry) and returns its length and what the mapping gives it (labels,
// help, observer options; the zero Result without a mapping).
func (c *Collector) base(path string, kind wire.Kind) (int, mapping.Result, error) {
	c.buf = append(c.buf, c.ns...)
	if res, ok := c.o.Mapper.Map(path, kind); ok {
		if res.Drop {
			return 0, res, errDropped
		}
		if res.Err != nil {
			return 0, res, fmt.Errorf("%w: %w", ErrUnexpressible, res.Err)
		}
		if !ValidMetricName(res.Name) {
			return 0, res, fmt.Errorf("%w: the mapping gives %q", ErrUnexpressible, res.Name)
		}
		for _, l := range res.Labels {
			if !ValidLabelName(l.Name) || l.Name == "le" || l.Name == "quantile" {
				return 0, res, fmt.Errorf("%w: the mapping gives label name %q", ErrUnexpressible, l.Name)
			}
		}
		c.buf = append(c.buf, res.Name...)
		return len(c.buf), res, nil
	}
	c.buf = AppendSnake(c.buf, path)
	if c.ns == "" && !validStart(string(c.buf)) {
		return 0, mapping.Result{}, fmt.Errorf("%w: %q would start with a digit or \"__\"", ErrUnexpressible, path)
	}
	return len(c.buf), mapping.Result{}, nil
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
