// Package prometheus writes a registry in the Prometheus text exposition
// format 0.0.4, for scraping by Prometheus or anything that reads it.
//
//	http.Handle("/metrics", prometheus.Handler(reg, prometheus.Options{Namespace: "myapp"}))
//
// Mapping (base = namespace + "_" + the metric name with '.' and '-' turned
// into '_' and camelCase into snake_case):
//
//	counter    base_total                     counter
//	gauge      base                           gauge
//	meter      base_total                     counter (events marked)
//	           base_m1_rate, base_m5_rate,    gauges, events/s
//	           base_m15_rate, base_mean_rate
//	histogram  base{quantile="0.5".."0.999"}  summary over the recent window,
//	           base_sum, base_count           with cumulative sum and count
//	timer      base_seconds{quantile=...}     summary in seconds, like histogram
//	           base_seconds_sum, _count
//	           base_m1_rate ... base_mean_rate  gauges, events/s
//
// Quantiles of a window that holds no values are NaN, as in client_golang's
// summaries: 0 would claim an observed latency of zero.
//
// A metric whose name cannot be expressed (it would start with a digit or
// with "__", or a non-summary name would end in _sum, _count or _bucket) or
// whose output names collide with an earlier metric's after mapping (say
// "a.b" and "a_b", or gauge "x_total" and counter "x") is left out whole,
// never written half or broken; see Options.OnSkip. Metrics are visited in
// name order, so the same one is always kept.
package prometheus

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/rendercache"
	"github.com/tapes-go/tapes/wire"
)

// ContentType is the Content-Type of the text exposition format 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

var (
	// ErrUnexpressible: the name cannot be written as a Prometheus metric name.
	ErrUnexpressible = errors.New("name cannot be expressed as a Prometheus metric name")
	// ErrCollision: after mapping, the metric would write a name that an
	// earlier metric (in name order) already writes.
	ErrCollision = errors.New("name collides with another metric after mapping")
)

// Options configures the output. The zero value writes names without a
// namespace and logs skipped metrics with slog.Default.
type Options struct {
	// Namespace prefixes every name, joined with '_'. It follows the
	// registry's name rule and is mapped like metric names.
	Namespace string

	// OnSkip, if not nil, is called for every metric left out of an output,
	// on every Write, with an error wrapping ErrUnexpressible or
	// ErrCollision. When nil, each skipped name is logged once per process
	// at Warn level. OnSkip must not call back into the registry's writers.
	OnSkip func(name string, err error)

	// MaxAge (Handler only) is how old a rendering may be when it answers
	// a scrape; 0 means it began after the scrape arrived. See Handler.
	MaxAge time.Duration
	// OnRender (Handler only), if not nil, is called after every rendering
	// with its duration, size in bytes and error: a count of renders, to
	// compare with the count of scrapes.
	OnRender func(took time.Duration, size int, err error)
}

// Write writes every metric of r to w. It returns an error only when the
// namespace is invalid (nothing is written) or w fails; skipped metrics go to
// opts.OnSkip.
func Write(w io.Writer, r *registry.Registry, opts Options) error {
	st := statePool.Get().(*state)
	defer statePool.Put(st)
	if err := st.reset(opts); err != nil {
		return err
	}
	var werr error
	r.Each(func(name string, m registry.Metric) {
		if werr != nil {
			return
		}
		st.metric(name, m)
		if len(st.buf) >= flushAt {
			_, werr = w.Write(st.buf)
			st.buf = st.buf[:0]
		}
	})
	if werr == nil && len(st.buf) > 0 {
		_, werr = w.Write(st.buf)
	}
	st.buf = st.buf[:0]
	return werr
}

// Handler returns an http.Handler serving r in the text format 0.0.4.
//
// Concurrent scrapes share one rendering: a scrape is answered by a render
// that began at most opts.MaxAge before it arrived, renders never overlap,
// and every scrape that arrives while one runs is answered by the next (or,
// within MaxAge, by the running one). So N scrapers cost one render per
// MaxAge (or one at a time when MaxAge is 0), and memory holds one shared
// body, not one per scrape; a client accepting gzip gets it compressed,
// once per render. OnSkip is called per render, not per scrape.
func Handler(r *registry.Registry, opts Options) http.Handler {
	c := rendercache.New(func(dst []byte) ([]byte, error) {
		w := &appender{dst}
		err := Write(w, r, opts)
		return w.b, err
	}, rendercache.Options{MaxAge: opts.MaxAge, OnRender: opts.OnRender})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, err := c.Get(req.Context())
		if err != nil {
			return // the client left while waiting
		}
		// Rendering fails only on an invalid namespace (a configuration
		// error) or a panicking gauge function.
		rendercache.Serve(w, req, b, ContentType, "")
	})
}

// appender is an io.Writer growing a byte slice.
type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// MetricName returns the base name a metric called name gets under
// namespace, before any kind suffix (_total, _seconds, ...).
func MetricName(namespace, name string) (string, error) {
	var st state
	if err := st.reset(Options{Namespace: namespace}); err != nil {
		return "", err
	}
	b, err := st.base(nil, name)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

const flushAt = 32 << 10

var statePool = sync.Pool{New: func() any {
	return &state{seed: maphash.MakeSeed(), seen: map[uint64]int32{}}
}}

// state is the reusable scratch space of one Write; pooled so that steady
// scrapes allocate next to nothing.
type state struct {
	opts  Options
	ns    []byte
	buf   []byte
	tmp   []byte
	seed  maphash.Seed
	seen  map[uint64]int32 // hash of an output name -> index in written<<4 | suffix
	names []written
}

type written struct {
	name string
	kind registry.Kind
}

type namespaceError struct{ err error }

func (e *namespaceError) Error() string { return "prometheus: invalid namespace: " + e.err.Error() }
func (e *namespaceError) Unwrap() error { return e.err }

func (st *state) reset(opts Options) error {
	st.opts = opts
	clear(st.seen)
	clear(st.names)
	st.names = st.names[:0]
	st.ns = st.ns[:0]
	if opts.Namespace != "" {
		if err := wire.ValidateName(opts.Namespace); err != nil {
			return &namespaceError{err}
		}
		st.ns = appendMapped(st.ns, opts.Namespace)
		if !validStart(st.ns) {
			return &namespaceError{fmt.Errorf("%q: %w", opts.Namespace, ErrUnexpressible)}
		}
		st.ns = append(st.ns, '_')
	}
	return nil
}

// Output names per kind: suffixes appended to the base. The first suffix of
// a summary names the family whose samples carry the other two.
var (
	counterSuffixes   = []string{"_total"}
	gaugeSuffixes     = []string{""}
	meterSuffixes     = []string{"_total", "_m1_rate", "_m5_rate", "_m15_rate", "_mean_rate"}
	histogramSuffixes = []string{"", "_sum", "_count"}
	timerSuffixes     = []string{"_seconds", "_seconds_sum", "_seconds_count", "_m1_rate", "_m5_rate", "_m15_rate", "_mean_rate"}
)

func suffixes(k registry.Kind) []string {
	switch k {
	case registry.KindCounter:
		return counterSuffixes
	case registry.KindGauge:
		return gaugeSuffixes
	case registry.KindMeter:
		return meterSuffixes
	case registry.KindHistogram:
		return histogramSuffixes
	case registry.KindTimer:
		return timerSuffixes
	}
	return nil
}

var quantileLabels = func() (l [registry.NumQuantiles]string) {
	for i, q := range registry.Quantiles {
		l[i] = `{quantile="` + strconv.FormatFloat(q, 'g', -1, 64) + `"} `
	}
	return l
}()

// metric checks the names m would write and writes it, or skips it whole.
func (st *state) metric(name string, m registry.Metric) {
	base, err := st.base(st.tmp[:0], name)
	st.tmp = base
	if err != nil {
		st.skip(name, err)
		return
	}
	k := m.Kind()
	sfx := suffixes(k)
	// Check every output name before claiming any: a metric is written
	// whole or not at all.
	for _, s := range sfx {
		if other, ok := st.lookup(base, s); ok {
			st.skip(name, fmt.Errorf("%w: %s%s is already written for %q", ErrCollision, base, s, other))
			return
		}
	}
	if k == registry.KindGauge && reservedSuffix(base) {
		st.skip(name, fmt.Errorf("%w: a gauge name ending in _sum, _count or _bucket reads as part of a summary or histogram", ErrUnexpressible))
		return
	}
	idx := int32(len(st.names))
	st.names = append(st.names, written{name, k})
	for i, s := range sfx {
		st.seen[st.hash(base, s)] = idx<<4 | int32(i)
	}

	switch m := m.(type) {
	case *registry.Counter:
		st.header(base, "_total", name, " (counter)", "counter")
		st.sampleInt(base, "_total", m.Value())
	case *registry.Gauge:
		st.header(base, "", name, " (gauge)", "gauge")
		st.sampleFloat(base, "", "", m.Value())
	case *registry.Meter:
		s := m.Snapshot()
		st.header(base, "_total", name, " (meter): events marked", "counter")
		st.sampleInt(base, "_total", s.Count)
		st.rates(base, name, s)
	case *registry.Histogram:
		s := m.Snapshot()
		st.summary(base, "", name, " (histogram): quantiles over the recent window", &s)
	case *registry.Timer:
		s := m.Snapshot()
		st.summary(base, "_seconds", name, " (timer): durations in seconds, quantiles over the recent window", &s.HistogramSnapshot)
		st.rates(base, name, s.Rates)
	}
}

func reservedSuffix(b []byte) bool {
	return bytes.HasSuffix(b, []byte("_sum")) || bytes.HasSuffix(b, []byte("_count")) ||
		bytes.HasSuffix(b, []byte("_bucket"))
}

func (st *state) hash(base []byte, sfx string) uint64 {
	var h maphash.Hash
	h.SetSeed(st.seed)
	h.Write(base)
	h.WriteString(sfx)
	return h.Sum64()
}

// lookup reports which earlier metric, if any, writes base+sfx. Hash hits
// are confirmed by rebuilding the other metric's output name.
func (st *state) lookup(base []byte, sfx string) (string, bool) {
	v, ok := st.seen[st.hash(base, sfx)]
	if !ok {
		return "", false
	}
	o := st.names[v>>4]
	ob, err := st.base(nil, o.name)
	if err != nil {
		return "", false
	}
	osfx := suffixes(o.kind)[v&15]
	if string(ob)+osfx == string(base)+sfx {
		return o.name, true
	}
	return "", false
}

func (st *state) skip(name string, err error) {
	if st.opts.OnSkip != nil {
		st.opts.OnSkip(name, err)
		return
	}
	if _, loaded := loggedSkips.LoadOrStore(name, struct{}{}); !loaded {
		slog.Default().Warn("prometheus: metric left out of the output", "metric", name, "err", err)
	}
}

var loggedSkips sync.Map

// base appends the namespaced, mapped name to dst.
func (st *state) base(dst []byte, name string) ([]byte, error) {
	dst = append(dst, st.ns...)
	start := len(dst)
	dst = appendMapped(dst, name)
	if len(st.ns) == 0 && !validStart(dst[start:]) {
		return dst, fmt.Errorf("%w: %q would start with a digit or \"__\"", ErrUnexpressible, name)
	}
	return dst, nil
}

// appendMapped maps a registry name (A-Z a-z 0-9 _ - and dots) to
// Prometheus snake_case: '.' and '-' become '_', and an upper-case letter
// becomes lower case, after a '_' when it follows a lower-case letter or a
// digit ("httpRequests" -> "http_requests"), because promtool flags
// camelCase.
func appendMapped(dst []byte, name string) []byte {
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

func validStart(b []byte) bool {
	if len(b) == 0 || b[0] >= '0' && b[0] <= '9' {
		return false
	}
	return !(len(b) >= 2 && b[0] == '_' && b[1] == '_')
}

func (st *state) header(base []byte, sfx, name, help, typ string) {
	b := append(st.buf, "# HELP "...)
	b = append(append(b, base...), sfx...)
	b = append(append(append(b, ' '), name...), help...)
	b = append(b, "\n# TYPE "...)
	b = append(append(b, base...), sfx...)
	b = append(append(append(b, ' '), typ...), '\n')
	st.buf = b
}

func (st *state) sampleInt(base []byte, sfx string, v int64) {
	b := append(append(st.buf, base...), sfx...)
	b = strconv.AppendInt(append(b, ' '), v, 10)
	st.buf = append(b, '\n')
}

func (st *state) sampleFloat(base []byte, sfx, labels string, v float64) {
	b := append(append(st.buf, base...), sfx...)
	if labels == "" {
		b = append(b, ' ')
	} else {
		b = append(b, labels...)
	}
	st.buf = append(appendFloat(b, v), '\n')
}

func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

func (st *state) summary(base []byte, sfx, name, help string, s *registry.HistogramSnapshot) {
	st.header(base, sfx, name, help, "summary")
	for i, l := range quantileLabels {
		v := s.Quantiles[i]
		if s.WindowCount == 0 {
			v = math.NaN()
		}
		st.sampleFloat(base, sfx, l, v)
	}
	b := append(append(st.buf, base...), sfx...)
	b = appendFloat(append(b, "_sum "...), s.Sum)
	b = append(append(append(b, '\n'), base...), sfx...)
	b = strconv.AppendUint(append(b, "_count "...), s.Count, 10)
	st.buf = append(b, '\n')
}

func (st *state) rates(base []byte, name string, s registry.MeterSnapshot) {
	st.gauge(base, "_m1_rate", name, " 1-minute rate, events/s", s.M1)
	st.gauge(base, "_m5_rate", name, " 5-minute rate, events/s", s.M5)
	st.gauge(base, "_m15_rate", name, " 15-minute rate, events/s", s.M15)
	st.gauge(base, "_mean_rate", name, " mean rate since start, events/s", s.MeanRate)
}

func (st *state) gauge(base []byte, sfx, name, help string, v float64) {
	st.header(base, sfx, name, help, "gauge")
	st.sampleFloat(base, sfx, "", v)
}
