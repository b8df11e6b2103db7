// Package prometheus serves a registry to Prometheus and everything that
// scrapes like it, in the three formats Prometheus reads, chosen from the
// scrape's Accept header:
//
//   - the text format 0.0.4 (the default, and what curl gets);
//   - the protobuf format (application/vnd.google.protobuf;
//     proto=io.prometheus.client.MetricFamily; encoding=delimited), which a
//     Prometheus started with --enable-feature=native-histograms asks for:
//     it carries every histogram and timer as a native histogram with the
//     registry's own schema and buckets, exactly, so that a fleet's
//     histograms add up (histogram_quantile(0.99, sum(rate(x[1m]))));
//   - OpenMetrics 1.0 text, which Prometheus prefers to 0.0.4 otherwise.
//
// Serve it with
//
//	http.Handle("/metrics", prometheus.Handler(reg, prometheus.Options{Namespace: "myapp"}))
//
// Every format is written from the same families (package expo names,
// labels and types them for every labelled output), so the formats carry
// the same series. Per kind, with base = namespace + "_" + the metric name
// with '.' and '-' turned into '_' and camelCase into snake_case (or the
// name a mapping gives, with its labels):
//
//	kind       registry name     written as                               type
//	counter    jobs.active       jobs_active 3                            gauge
//	           (CountersMonotonic) jobs_active_total 3                    counter
//	gauge      queue.depth       queue_depth 7                            gauge
//	meter      http.requests     http_requests_total 120                  counter
//	           (Rates)           http_requests_m1_rate 2.1, _m5_rate,     gauges, events/s
//	                             _m15_rate, _mean_rate
//	histogram  payload.size      text, OpenMetrics: a summary over the recent window
//	                             payload_size{quantile="0.5"} 512 ... {quantile="0.999"}
//	                             payload_size_sum 61440
//	                             payload_size_count 120
//	                             (ClassicBuckets) a histogram instead:
//	                             payload_size_bucket{le="512"} 64 ... {le="+Inf"} 120
//	                             protobuf: a native histogram payload_size (schema,
//	                             zero bucket, spans and deltas: the registry's buckets),
//	                             with the classic buckets too when ClassicBuckets is set
//	timer      rpc.latency       rpc_latency_seconds, like a histogram, in seconds
//	                             (a name already ending in "_seconds" keeps one suffix)
//	           (Rates)           rpc_latency_m1_rate ... rpc_latency_mean_rate
//	per-worker pool.busy.pid-12  pool_busy{worker="12"} 1                 gauge
//	gauge
//
// Counters are gauges by default because a tapes counter can go down (Dec)
// and a Prometheus counter must not: rate() reads any decrease as a reset
// and adds a whole counter's worth of phantom increase. This is
// OpenTelemetry's distinction between Counter and UpDownCounter (an
// UpDownCounter is exported to Prometheus as a gauge), and what the
// Dropwizard exporter of Prometheus' Java client does with Dropwizard's
// counters, which can also dec. A program whose counters only go up sets
// Options.CountersMonotonic and gets "_total" counters. Meters cannot go
// down and are always counters.
//
// The m1/m5/m15/mean_rate gauges are off unless Options.Rates is set:
// Prometheus users take rate() of the counter, and the four gauges per
// meter and timer made a quarter of a typical host's series.
//
// Quantiles of a window that holds no values are NaN, as in client_golang's
// summaries: 0 would claim an observed latency of zero.
//
// Classic buckets: the bounds are Options.ClassicBounds when set (timers in
// seconds), else the powers of two spanning the values every series of the
// family recorded (le = 2^k, from the lowest bucket in use to the highest).
// The counts are the registry's own, summed: at schema >= 0 every power of
// two is a bucket boundary, so the derived bounds are exact; a bound given
// in ClassicBounds that falls inside a native bucket counts that bucket
// above it (at schema 6 a bucket spans 1.1%). Derived bounds can differ
// between hosts (each spans its own values); to add classic buckets up
// across a fleet, give fixed ClassicBounds, or better, scrape the native
// histograms.
//
// A metric whose name cannot be expressed (it would start with a digit or
// with "__") or whose series collide with an earlier metric's after mapping
// (say "a.b" and "a_b", or a gauge "h_count" beside histogram "h") is left
// out whole, never written half or broken, and reported to Options.OnSkip.
// Metrics are visited in name order, so the same one is always kept. A
// gauge whose name ends in _count, _sum or _bucket is written unless a
// histogram writes that name (promtool lints such names; they still parse).
package prometheus

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/expo"
	"github.com/tapes-go/tapes/reporters/internal/rendercache"
	"github.com/tapes-go/tapes/reporters/mapping"
	"github.com/tapes-go/tapes/wire"
)

// Content types of the formats, as served.
const (
	// ContentType is the text exposition format 0.0.4.
	ContentType = "text/plain; version=0.0.4; charset=utf-8"
	// ContentTypeProtobuf is the length-delimited protobuf format.
	ContentTypeProtobuf = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
	// ContentTypeOpenMetrics is OpenMetrics 1.0.0 text.
	ContentTypeOpenMetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8"
)

// Format is an exposition format.
type Format uint8

const (
	// FormatText is the text format 0.0.4.
	FormatText Format = iota
	// FormatProtobuf is the delimited protobuf format with native
	// histograms.
	FormatProtobuf
	// FormatOpenMetrics is OpenMetrics 1.0 text.
	FormatOpenMetrics
	numFormats
)

func (f Format) String() string {
	switch f {
	case FormatText:
		return "text 0.0.4"
	case FormatProtobuf:
		return "protobuf"
	case FormatOpenMetrics:
		return "OpenMetrics 1.0"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// offered are the formats Negotiate picks from, in expfmt's terms. The
// protobuf text encodings (debugging aids) are not offered.
var offered = []expfmt.Format{expfmt.FmtProtoDelim, expfmt.FmtOpenMetrics_1_0_0, expfmt.FmtOpenMetrics_0_0_1, expfmt.FmtText}

// Negotiate picks the format for a request's headers by the Accept header
// (expfmt's rules: the client's preference order, then ours); anything it
// does not ask for gets the text format 0.0.4.
func Negotiate(h http.Header) Format {
	f := expfmt.NegotiateAccept(h, offered...)
	switch f.FormatType() {
	case expfmt.TypeProtoDelim:
		return FormatProtobuf
	case expfmt.TypeOpenMetrics:
		return FormatOpenMetrics
	}
	return FormatText
}

var (
	// ErrUnexpressible: the name cannot be written as a Prometheus metric name.
	ErrUnexpressible = expo.ErrUnexpressible
	// ErrCollision: after mapping, the metric would write a series that an
	// earlier metric (in name order) already writes.
	ErrCollision = expo.ErrCollision
)

// Options configures the output. The zero value writes names without a
// namespace, counters as gauges, no rate gauges, summaries for histograms
// and timers in the text formats, and logs skipped metrics with
// slog.Default.
type Options struct {
	// Namespace prefixes every name, joined with '_'. It follows the
	// registry's name rule and is mapped like metric names.
	Namespace string

	// Mapper, if not nil, names and labels the metrics it matches (a
	// statsd_exporter mapping file, or mapping.Func); the others keep
	// their derived names.
	Mapper *mapping.Mapper

	// Help, if not nil, gives the HELP text of a family by its full name
	// ("myapp_http_latency_seconds"); "" keeps the default: the mapping's
	// help if it has one, else the registry name and kind.
	Help func(family string) string

	// Rates adds the m1/m5/m15/mean_rate gauges of meters and timers.
	Rates bool

	// CountersMonotonic writes tapes counters as Prometheus counters
	// ("_total") instead of gauges: for programs that never Dec them.
	CountersMonotonic bool

	// ClassicBuckets writes histograms and timers with classic _bucket
	// series: in the text formats instead of the summary, in protobuf
	// beside the native buckets (for scrapers that cannot read native
	// histograms). See the package comment for the bounds.
	ClassicBuckets bool
	// ClassicBounds are the classic buckets' upper bounds, ascending (+Inf
	// is implied), for every histogram and timer (timers in seconds); nil
	// derives powers of two from each family's values.
	ClassicBounds []float64

	// OnSkip, if not nil, is called for every metric left out of an output,
	// on every render, with an error wrapping ErrUnexpressible or
	// ErrCollision. When nil, each skipped name is logged once per process
	// at Warn level with slog.Default. OnSkip must not call back into the
	// registry's writers.
	OnSkip func(name string, err error)

	// MaxAge (Handler only) is how old a rendering may be when it answers
	// a scrape; 0 means it began after the scrape arrived. See Handler.
	MaxAge time.Duration
	// OnRender (Handler only), if not nil, is called after every rendering
	// with its duration, size in bytes and error: a count of renders, to
	// compare with the count of scrapes.
	OnRender func(took time.Duration, size int, err error)
}

// Validate reports whether the options can be written: a valid namespace
// and ascending, finite ClassicBounds.
func (o *Options) Validate() error {
	if _, err := expo.Collect(registry.New(), expo.Options{Namespace: o.Namespace}, nil); err != nil {
		return namespaceErr(err)
	}
	for i, b := range o.ClassicBounds {
		switch {
		case math.IsNaN(b) || math.IsInf(b, 0):
			return fmt.Errorf("prometheus: ClassicBounds: %g: bounds must be finite (+Inf is implied)", b)
		case i > 0 && b <= o.ClassicBounds[i-1]:
			return fmt.Errorf("prometheus: ClassicBounds: %g after %g: bounds must ascend", b, o.ClassicBounds[i-1])
		}
	}
	return nil
}

func (o *Options) expo(skipNative bool) expo.Options {
	onSkip := o.OnSkip
	if onSkip == nil {
		onSkip = logSkip
	}
	return expo.Options{
		Namespace:         o.Namespace,
		Mapper:            o.Mapper,
		Rates:             o.Rates,
		CountersMonotonic: o.CountersMonotonic,
		SkipNative:        skipNative,
		OnSkip:            onSkip,
	}
}

// namespaceErr words expo's only error (an invalid namespace) in this
// package's terms; Unwrap gives the reason.
func namespaceErr(err error) error {
	return fmt.Errorf("prometheus: invalid namespace: %w", errors.Unwrap(err))
}

var loggedSkips sync.Map

func logSkip(name string, err error) {
	if _, loaded := loggedSkips.LoadOrStore(name, struct{}{}); !loaded {
		slog.Default().Warn("prometheus: metric left out of the output", "metric", name, "err", err)
	}
}

// collect runs expo.Collect into st.fams and applies Options.Help.
func (st *state) collect(r *registry.Registry, o *Options, skipNative bool) error {
	fams, err := st.col.Collect(r, o.expo(skipNative))
	st.fams = fams
	if err != nil {
		return namespaceErr(err)
	}
	if o.Help != nil {
		for i := range fams {
			if h := o.Help(fams[i].Name); h != "" {
				fams[i].Help = h
			}
		}
	}
	return nil
}

// Write writes every metric of r to w in the text format 0.0.4. It returns
// an error only when the options are invalid (nothing is written) or w
// fails; skipped metrics go to opts.OnSkip.
func Write(w io.Writer, r *registry.Registry, opts Options) error {
	return Encode(w, r, FormatText, opts)
}

// Encode writes every metric of r to w in format f.
func Encode(w io.Writer, r *registry.Registry, f Format, opts Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	st := statePool.Get().(*state)
	defer func() {
		st.reset()
		statePool.Put(st)
	}()
	return st.encode(w, r, f, &opts)
}

func (st *state) encode(w io.Writer, r *registry.Registry, f Format, opts *Options) error {
	switch f {
	case FormatText:
		if err := st.collect(r, opts, !opts.ClassicBuckets); err != nil {
			return err
		}
		return st.writeText(w, opts)
	case FormatProtobuf:
		if err := st.collect(r, opts, false); err != nil {
			return err
		}
		return st.writeProto(w, opts)
	case FormatOpenMetrics:
		if err := st.collect(r, opts, !opts.ClassicBuckets); err != nil {
			return err
		}
		return st.writeOpenMetrics(w, opts)
	}
	return fmt.Errorf("prometheus: unknown format %v", f)
}

// Handler returns an http.Handler serving r in the format each request's
// Accept header asks for (see Negotiate), with Vary: Accept.
//
// Concurrent scrapes of one format share one rendering: a scrape is
// answered by a render that began at most opts.MaxAge before it arrived,
// renders never overlap, and every scrape that arrives while one runs is
// answered by the next (or, within MaxAge, by the running one). So N
// scrapers cost one render per format per MaxAge (or one at a time when
// MaxAge is 0), and memory holds one shared body per format, not one per
// scrape; a client accepting gzip gets it compressed, once per render.
// OnSkip is called per render, not per scrape.
func Handler(r *registry.Registry, opts Options) http.Handler {
	h := &handler{}
	invalid := opts.Validate()
	for f := range numFormats {
		// A cache never runs two renders at once, so each format keeps
		// its own scratch state (the families of 10k metrics are
		// megabytes; a sync.Pool loses them at every GC).
		st := &state{}
		h.caches[f] = rendercache.New(func(dst []byte) ([]byte, error) {
			if invalid != nil {
				return dst, invalid
			}
			w := &appender{dst}
			err := st.encode(w, r, f, &opts)
			st.reset()
			return w.b, err
		}, rendercache.Options{MaxAge: opts.MaxAge, OnRender: opts.OnRender})
	}
	return h
}

type handler struct {
	caches [numFormats]*rendercache.Cache
}

func (h *handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	f := Negotiate(req.Header)
	b, err := h.caches[f].Get(req.Context())
	if err != nil {
		return // the client left while waiting
	}
	w.Header().Add("Vary", "Accept")
	// Rendering fails only on invalid options (a configuration error) or
	// a panicking gauge function.
	rendercache.Serve(w, req, b, contentType(f, req.Header), "")
}

func contentType(f Format, h http.Header) string {
	switch f {
	case FormatProtobuf:
		return ContentTypeProtobuf
	case FormatOpenMetrics:
		// 0.0.1 and 1.0.0 are the same text; answer with the version asked.
		if expfmt.NegotiateAccept(h, expfmt.FmtOpenMetrics_1_0_0, expfmt.FmtOpenMetrics_0_0_1).Version() == expfmt.OpenMetricsVersion_0_0_1 {
			return "application/openmetrics-text; version=0.0.1; charset=utf-8"
		}
		return ContentTypeOpenMetrics
	}
	return ContentType
}

// appender is an io.Writer growing a byte slice.
type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// MetricName returns the base name a metric called name gets under
// namespace without a mapping, before any kind suffix (_total, _seconds).
func MetricName(namespace, name string) (string, error) {
	if err := wire.ValidateName(name); err != nil {
		return "", fmt.Errorf("prometheus: %w", err)
	}
	r := registry.New()
	r.Gauge(name, nil)
	var got string
	var skipped error
	fams, err := expo.Collect(r, expo.Options{Namespace: namespace, OnSkip: func(_ string, err error) { skipped = err }}, nil)
	if err != nil {
		return "", namespaceErr(err)
	}
	if skipped != nil {
		return "", fmt.Errorf("prometheus: %w", skipped)
	}
	if len(fams) == 1 {
		got = fams[0].Name
	}
	return got, nil
}

const flushAt = 32 << 10

var statePool = sync.Pool{New: func() any { return &state{} }}

// state is the reusable scratch space of one Encode: pooled for Encode,
// one per format in a Handler, so that steady scrapes allocate little.
type state struct {
	col     expo.Collector // keeps its memory between renders
	fams    []expo.Family  // what col returned, valid until its next Collect
	buf     []byte
	cum     []uint64
	natives []*registry.NativeHistogram // familyBounds' scratch
	le      []byte
	arena   arena // protobuf and OpenMetrics messages, dropped by reset
}

// reset readies st for the next encode, keeping its memory.
func (st *state) reset() {
	st.fams = nil
	st.buf = st.buf[:0]
	st.arena = arena{}
}
