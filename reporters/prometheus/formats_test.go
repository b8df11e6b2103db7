package prometheus

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/mapping"
	"github.com/tapes-go/tapes/wire"
)

// routeMapping maps "fleet.<route>.latency" to fleet_latency{route=...} and
// "fleet.<route>.requests" to fleet_requests{route=...}, as a
// statsd_exporter file with match "fleet.*.latency" would.
var routeMapping = mapping.Func(func(name string, k wire.Kind) (mapping.Result, bool) {
	p := strings.Split(name, ".")
	if len(p) != 3 || p[0] != "fleet" {
		return mapping.Result{}, false
	}
	return mapping.Result{Name: "fleet_" + p[2], Labels: []mapping.Label{{Name: "route", Value: p[1]}}}, true
})

// fleetRegistry holds every kind, labels from routeMapping, per-worker
// gauges and names with suffixes of their own.
func fleetRegistry() *registry.Registry {
	// A still clock: mean rates read at different moments must agree.
	r := registry.New(registry.WithClock(newClock()))
	r.Counter("jobs.active").Add(3)
	r.Counter("tapes.host.shm.dropped_total").Add(2)
	r.Gauge("queue.depth", nil).Set(7.25)
	r.Gauge("pool.busy.pid-12", nil).Set(1)
	r.Gauge("pool.busy.pid-7", nil).Set(0)
	r.Gauge("label.escape", nil).Set(-1)
	r.Meter("http.requests").Mark(120)
	r.Histogram("payload.size").Update(0)
	h := r.Histogram("payload.size")
	for i := 1; i <= 1000; i++ {
		h.Update(float64(i * 3))
	}
	h.Update(-5)
	r.Histogram("empty.hist")
	for _, route := range []string{"index", "login", "users"} {
		tm := r.Timer("fleet." + route + ".latency")
		for i := 1; i <= 300; i++ {
			tm.Update(time.Duration(i*len(route)) * 100 * time.Microsecond)
		}
		r.Counter("fleet." + route + ".requests").Add(int64(len(route)))
	}
	r.Timer("rpc.latency_seconds").Update(3 * time.Millisecond)
	return r
}

func encode(t *testing.T, r *registry.Registry, f Format, o Options) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Encode(&b, r, f, o); err != nil {
		t.Fatalf("Encode %v: %v", f, err)
	}
	return b.Bytes()
}

var expfmtOf = [...]expfmt.Format{FormatText: expfmt.FmtText, FormatProtobuf: expfmt.FmtProtoDelim, FormatOpenMetrics: expfmt.FmtOpenMetrics_1_0_0}

// decode reads an output back with expfmt's own parser of its format.
func decode(t *testing.T, body []byte, f Format) map[string]*dto.MetricFamily {
	t.Helper()
	dec := expfmt.NewDecoder(bytes.NewReader(body), expfmtOf[f])
	out := map[string]*dto.MetricFamily{}
	for {
		mf := &dto.MetricFamily{}
		err := dec.Decode(mf)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%v: expfmt cannot read the output: %v\n%s", f, err, body)
		}
		name := mf.GetName()
		// OpenMetrics names a counter's family without its _total.
		if mf.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			name += "_total"
		}
		if _, dup := out[name]; dup {
			t.Fatalf("%v: family %s twice", f, name)
		}
		out[name] = mf
	}
}

// series flattens decoded families into "name{labels} what value" lines:
// the series every format must carry alike. Histograms and summaries give
// their count and sum (and buckets; quantiles when quantiles is set).
func series(fams map[string]*dto.MetricFamily, quantiles bool) []string {
	var out []string
	for name, mf := range fams {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			id := name + "{" + strings.Join(ls, ",") + "}"
			add := func(what string, v float64) { out = append(out, fmt.Sprintf("%s %s %v", id, what, v)) }
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add("counter", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add("gauge", m.GetGauge().GetValue())
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				add("count", float64(s.GetSampleCount()))
				add("sum", s.GetSampleSum())
				if quantiles {
					for _, q := range s.GetQuantile() {
						add(fmt.Sprintf("q%v", q.GetQuantile()), q.GetValue())
					}
				}
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				add("count", float64(h.GetSampleCount()))
				add("sum", h.GetSampleSum())
				for _, b := range h.GetBucket() {
					if !math.IsInf(b.GetUpperBound(), 1) {
						add(fmt.Sprintf("le=%v", b.GetUpperBound()), float64(b.GetCumulativeCount()))
					}
				}
			default:
				add("type "+mf.GetType().String(), 0)
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestFormatsCarryTheSameSeries(t *testing.T) {
	r := fleetRegistry()
	for _, o := range []Options{
		{Mapper: routeMapping},
		{Mapper: routeMapping, Rates: true, CountersMonotonic: true, Namespace: "app"},
		{Mapper: routeMapping, ClassicBuckets: true},
		{ClassicBuckets: true, ClassicBounds: []float64{-1, 0, 0.001, 0.01, 0.1, 1, 10, 100, 1000}},
	} {
		name := fmt.Sprintf("rates=%v monotonic=%v classic=%v bounds=%v", o.Rates, o.CountersMonotonic, o.ClassicBuckets, o.ClassicBounds != nil)
		t.Run(name, func(t *testing.T) {
			o.OnSkip = func(n string, err error) { t.Errorf("skipped %s: %v", n, err) }
			text := series(decode(t, encode(t, r, FormatText, o), FormatText), true)
			om := series(decode(t, encode(t, r, FormatOpenMetrics, o), FormatOpenMetrics), true)
			pb := series(decode(t, encode(t, r, FormatProtobuf, o), FormatProtobuf), false)
			if !slices.Equal(text, om) {
				t.Errorf("text and OpenMetrics differ:\n%s", diff(text, om))
			}
			// Protobuf carries native histograms, without the windowed
			// quantiles of the text summaries.
			var noQ []string
			for _, s := range text {
				if !strings.Contains(s, "} q0.") {
					noQ = append(noQ, s)
				}
			}
			if !slices.Equal(noQ, pb) {
				t.Errorf("text and protobuf differ:\n%s", diff(noQ, pb))
			}
			if len(text) < 30 {
				t.Errorf("only %d series:\n%s", len(text), strings.Join(text, "\n"))
			}
		})
	}
}

func diff(a, b []string) string {
	var s strings.Builder
	for _, x := range a {
		if !slices.Contains(b, x) {
			fmt.Fprintf(&s, "- %s\n", x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			fmt.Fprintf(&s, "+ %s\n", x)
		}
	}
	return s.String()
}

func TestLabelsFromMappingAndWorkers(t *testing.T) {
	r := fleetRegistry()
	out := string(encode(t, r, FormatText, Options{Mapper: routeMapping}))
	for _, want := range []string{
		"# TYPE fleet_latency_seconds summary\n",
		`fleet_latency_seconds{route="index",quantile="0.99"} `,
		"fleet_latency_seconds_count{route=\"login\"} 300\n",
		"fleet_requests{route=\"users\"} 5\n",
		"pool_busy{worker=\"12\"} 1\n",
		"pool_busy{worker=\"7\"} 0\n",
		// No doubled suffixes.
		"# TYPE rpc_latency_seconds summary\n",
		"tapes_host_shm_dropped_total 2\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	for _, bad := range []string{"_seconds_seconds", "_total_total", "pid_12", "fleet_index"} {
		if strings.Contains(out, bad) {
			t.Errorf("%q in\n%s", bad, out)
		}
	}
	// Monotonic counters: one _total, whatever the name had.
	out = string(encode(t, r, FormatText, Options{Mapper: routeMapping, CountersMonotonic: true}))
	for _, want := range []string{"# TYPE tapes_host_shm_dropped_total counter\ntapes_host_shm_dropped_total 2\n", "fleet_requests_total{route=\"users\"} 5\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "_total_total") {
		t.Errorf("doubled suffix in\n%s", out)
	}
}

// A gauge whose name ends in _count is written unless a histogram writes
// that name; promtool only lints it (exit 3), it parses.
func TestGaugeNamedCountIsWritten(t *testing.T) {
	r := registry.New()
	r.Gauge("retries.count", nil).Set(4)
	r.Counter("requestCount").Add(2)
	var skipped []string
	o := Options{OnSkip: func(n string, _ error) { skipped = append(skipped, n) }}
	out := encode(t, r, FormatText, o)
	if !bytes.Contains(out, []byte("\nretries_count 4\n")) || !bytes.Contains(out, []byte("\nrequest_count 2\n")) || skipped != nil {
		t.Fatalf("skipped %v, wrote\n%s", skipped, out)
	}
	for _, f := range []Format{FormatProtobuf, FormatOpenMetrics} {
		if fams := decode(t, encode(t, r, f, o), f); fams["retries_count"].GetMetric()[0].GetGauge().GetValue() != 4 {
			t.Errorf("%v: retries_count = %v", f, fams["retries_count"])
		}
	}
	_, promtool := testenv.Prometheus(t)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(out)
	msg, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(string(msg), `should not have "_count" suffix`) {
		t.Errorf("promtool: %v\n%s (want exit 3: a lint, not a parse error)", err, msg)
	}
}

func TestPromtoolChecksEveryVariant(t *testing.T) {
	_, promtool := testenv.Prometheus(t)
	for _, o := range []Options{
		{Mapper: routeMapping},
		{Mapper: routeMapping, Rates: true, CountersMonotonic: true, Namespace: "app"},
		{Mapper: routeMapping, ClassicBuckets: true},
		{ClassicBuckets: true, ClassicBounds: []float64{0.001, 0.01, 0.1, 1}},
	} {
		o.OnSkip = func(n string, err error) { t.Errorf("skipped %s: %v", n, err) }
		rr := fleetRegistry()
		if !o.CountersMonotonic {
			// A gauge named *_total is a promtool lint: monotonic counters
			// are the setting for names like tapes' dropped_total.
			rr.Unregister("tapes.host.shm.dropped_total")
		}
		out := encode(t, rr, FormatText, o)
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(out)
		if msg, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(msg)) != 0 {
			t.Errorf("promtool check metrics (%+v): %v\n%s\ninput:\n%s", o, err, msg, out)
		}
	}
}

func TestHelpTexts(t *testing.T) {
	r := registry.New()
	r.Gauge("a", nil).Set(1)
	r.Gauge("b", nil).Set(2)
	help := map[string]string{"a": "Line one\nline \\two\\."}
	m := mapping.Func(func(name string, k wire.Kind) (mapping.Result, bool) {
		if name == "b" {
			return mapping.Result{Name: "bee", Help: "Bee from the mapping."}, true
		}
		return mapping.Result{}, false
	})
	o := Options{Mapper: m, Help: func(f string) string { return help[f] }}
	out := string(encode(t, r, FormatText, o))
	for _, want := range []string{"# HELP a Line one\\nline \\\\two\\\\.\n", "# HELP bee Bee from the mapping.\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	for _, f := range []Format{FormatText, FormatProtobuf, FormatOpenMetrics} {
		if got := decode(t, encode(t, r, f, o), f)["a"].GetHelp(); got != help["a"] {
			t.Errorf("%v: help %q, want %q", f, got, help["a"])
		}
	}
}

func TestLabelValuesEscaped(t *testing.T) {
	m := mapping.Func(func(name string, k wire.Kind) (mapping.Result, bool) {
		return mapping.Result{Name: "x", Labels: []mapping.Label{{Name: "v", Value: "a\"b\\c\nd"}}}, true
	})
	r := registry.New()
	r.Gauge("g", nil).Set(1)
	for _, f := range []Format{FormatText, FormatProtobuf, FormatOpenMetrics} {
		fams := decode(t, encode(t, r, f, Options{Mapper: m}), f)
		if got := fams["x"].GetMetric()[0].GetLabel()[0].GetValue(); got != "a\"b\\c\nd" {
			t.Errorf("%v: label value %q", f, got)
		}
	}
}

// The native histogram in the protobuf output is the registry's, bucket
// for bucket: deltas summed back give its absolute counts.
func TestProtobufNativeHistogramIsExact(t *testing.T) {
	r := fleetRegistry()
	fams := decode(t, encode(t, r, FormatProtobuf, Options{Mapper: routeMapping}), FormatProtobuf)
	check := func(fam string, want registry.NativeHistogram, labels ...string) {
		t.Helper()
		var h *dto.Histogram
		for _, m := range fams[fam].GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetValue())
			}
			if slices.Equal(ls, labels) {
				h = m.GetHistogram()
			}
		}
		if h == nil {
			t.Fatalf("%s%v missing", fam, labels)
		}
		got := registry.NativeHistogram{
			Schema: h.GetSchema(), ZeroThreshold: h.GetZeroThreshold(), ZeroCount: h.GetZeroCount(),
			Count: h.GetSampleCount(), Sum: h.GetSampleSum(),
		}
		got.PositiveSpans, got.PositiveCounts = absolute(h.GetPositiveSpan(), h.GetPositiveDelta())
		got.NegativeSpans, got.NegativeCounts = absolute(h.GetNegativeSpan(), h.GetNegativeDelta())
		if h.GetZeroThreshold() <= 0 {
			t.Errorf("%s: zero threshold %v: Prometheus would read an empty histogram as classic", fam, h.GetZeroThreshold())
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s%v:\n got %+v\nwant %+v", fam, labels, got, want)
		}
		if len(h.GetBucket()) != 0 {
			t.Errorf("%s: classic buckets without ClassicBuckets", fam)
		}
	}
	check("payload_size", r.Histogram("payload.size").Native())
	check("empty_hist", r.Histogram("empty.hist").Native())
	check("fleet_latency_seconds", r.Timer("fleet.login.latency").Native(), "login")
	if n := r.Histogram("payload.size").Native(); n.Schema != registry.MaxSchema || len(n.NegativeCounts) != 1 || n.ZeroCount != 1 {
		t.Errorf("fixture: %+v", n)
	}
}

func absolute(sp []*dto.BucketSpan, deltas []int64) ([]registry.BucketSpan, []uint64) {
	var spans []registry.BucketSpan
	for _, s := range sp {
		spans = append(spans, registry.BucketSpan{Offset: s.GetOffset(), Length: s.GetLength()})
	}
	var counts []uint64
	var c int64
	for _, d := range deltas {
		c += d
		counts = append(counts, uint64(c))
	}
	return spans, counts
}

// The classic buckets' counts are exact at the derived powers of two:
// compared with counting the recorded values themselves.
func TestClassicBucketsCountExactly(t *testing.T) {
	r := registry.New()
	h := r.Histogram("h")
	var vals []float64
	for i := 0; i < 5000; i++ {
		v := math.Exp(float64(i%997)/60) / 100 // 0.01 .. ~160000
		if i%13 == 0 {
			v = math.Ldexp(1, i%20) // exactly on a bound
		}
		vals = append(vals, v)
		h.Update(v)
	}
	h.Update(0)
	vals = append(vals, 0)
	fams := decode(t, encode(t, r, FormatText, Options{ClassicBuckets: true}), FormatText)
	bs := fams["h"].GetMetric()[0].GetHistogram().GetBucket()
	if len(bs) < 20 || bs[0].GetUpperBound() != 1.0/64 || !math.IsInf(bs[len(bs)-1].GetUpperBound(), 1) {
		t.Fatalf("bounds %v", bs)
	}
	for _, b := range bs {
		var n uint64
		for _, v := range vals {
			if v <= b.GetUpperBound() {
				n++
			}
		}
		if b.GetCumulativeCount() != n {
			t.Errorf("le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), n)
		}
	}
}

func TestNegotiation(t *testing.T) {
	r := fleetRegistry()
	srv := httptest.NewServer(Handler(r, Options{Mapper: routeMapping}))
	defer srv.Close()
	for _, c := range []struct {
		accept string
		want   Format
		ct     string
	}{
		{"", FormatText, ContentType},
		{"*/*", FormatText, ContentType},
		{"text/plain", FormatText, ContentType},
		{"text/html,application/xhtml+xml,*/*;q=0.8", FormatText, ContentType},
		{"application/json", FormatText, ContentType},
		// Prometheus 2.42 without native histograms.
		{"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", FormatOpenMetrics, ContentTypeOpenMetrics},
		// Prometheus 2.42 with --enable-feature=native-histograms.
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2", FormatProtobuf, ContentTypeProtobuf},
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", FormatProtobuf, ContentTypeProtobuf},
		{"application/openmetrics-text", FormatOpenMetrics, "application/openmetrics-text; version=0.0.1; charset=utf-8"},
		{"text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5", FormatText, ContentType},
		// Encodings we do not offer fall back to text.
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text", FormatText, ContentType},
		{"application/openmetrics-text;version=2.0.0", FormatText, ContentType},
	} {
		h := http.Header{}
		if c.accept != "" {
			h.Set("Accept", c.accept)
		}
		if got := Negotiate(h); got != c.want {
			t.Errorf("Negotiate(%q) = %v, want %v", c.accept, got, c.want)
		}
		for _, gz := range []bool{false, true} {
			req, _ := http.NewRequest("GET", srv.URL, nil)
			req.Header = h.Clone()
			if gz {
				// Asked for explicitly, gzip is left to the caller.
				req.Header.Set("Accept-Encoding", "gzip")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var rd io.Reader = resp.Body
			if gz {
				if resp.Header.Get("Content-Encoding") != "gzip" {
					t.Errorf("Accept %q: not gzipped", c.accept)
				}
				if rd, err = gzip.NewReader(resp.Body); err != nil {
					t.Fatal(err)
				}
			}
			body, _ := io.ReadAll(rd)
			resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != c.ct {
				t.Errorf("Accept %q: Content-Type %q, want %q", c.accept, ct, c.ct)
			}
			if v := resp.Header.Values("Vary"); !slices.Contains(v, "Accept") || !slices.Contains(v, "Accept-Encoding") {
				t.Errorf("Vary %v", v)
			}
			fams := decode(t, body, c.want)
			if fams["fleet_latency_seconds"] == nil || len(fams["fleet_latency_seconds"].GetMetric()) != 3 {
				t.Errorf("Accept %q: fleet_latency_seconds %v", c.accept, fams["fleet_latency_seconds"])
			}
		}
	}
}

// One cache per format: a text scrape never gets a cached protobuf body
// or the other way round, even within MaxAge.
func TestCacheKeysOnFormat(t *testing.T) {
	r := fleetRegistry()
	renders := 0
	srv := httptest.NewServer(Handler(r, Options{MaxAge: time.Hour, OnRender: func(time.Duration, int, error) { renders++ }}))
	defer srv.Close()
	get := func(accept string) string {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("Content-Type")
	}
	pb := "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
	for i := 0; i < 3; i++ {
		if ct := get("text/plain"); ct != ContentType {
			t.Fatalf("text: %s", ct)
		}
		if ct := get(pb); ct != ContentTypeProtobuf {
			t.Fatalf("protobuf: %s", ct)
		}
		if ct := get("application/openmetrics-text;version=1.0.0"); ct != ContentTypeOpenMetrics {
			t.Fatalf("OpenMetrics: %s", ct)
		}
	}
	if renders != 3 {
		t.Errorf("%d renders for 3 formats within MaxAge, want 3", renders)
	}
}

func TestOptionsValidate(t *testing.T) {
	r := registry.New()
	for _, o := range []Options{{Namespace: "no spaces"}, {ClassicBounds: []float64{1, 1}}, {ClassicBounds: []float64{math.NaN()}}, {ClassicBounds: []float64{1, math.Inf(1)}}} {
		for _, f := range []Format{FormatText, FormatProtobuf, FormatOpenMetrics} {
			var b bytes.Buffer
			if err := Encode(&b, r, f, o); err == nil || b.Len() != 0 || strings.Count(err.Error(), "prometheus: ") != 1 {
				t.Errorf("%+v %v: err %v, wrote %d bytes", o, f, err, b.Len())
			}
		}
	}
}

// A mapping's observer_type decides, per family, what the outputs that
// write either give: classic buckets at its histogram_options.buckets, or a
// summary of its summary_options.quantiles; other families follow Options.
func TestMappingObserverOptions(t *testing.T) {
	m, err := mapping.Parse([]byte(`mappings:
  - match: "api.*.latency"
    name: "api_latency"
    observer_type: histogram
    histogram_options:
      buckets: [0.01, 0.1, 1]
    labels:
      route: "$1"
  - match: "db.*.latency"
    name: "db_latency"
    observer_type: summary
    summary_options:
      quantiles:
        - quantile: 0.9
          error: 0.01
    labels:
      table: "$1"
`))
	if err != nil {
		t.Fatal(err)
	}
	r := registry.New()
	for i := 1; i <= 100; i++ {
		r.Timer("api.index.latency").Update(time.Duration(i) * 10 * time.Millisecond) // 0.01 .. 1 s
		r.Timer("db.users.latency").Update(time.Duration(i) * time.Millisecond)
		r.Timer("plain.latency").Update(time.Duration(i) * time.Millisecond)
	}
	o := Options{Mapper: m, OnSkip: func(n string, err error) { t.Errorf("skipped %s: %v", n, err) }}
	text := string(encode(t, r, FormatText, o))
	for _, want := range []string{
		"# TYPE api_latency_seconds histogram\n",
		// A bound inside a native bucket counts that bucket above it
		// (package doc): 0.01 and 0.1 s are, 1 s is a bucket boundary.
		`api_latency_seconds_bucket{route="index",le="0.01"} 0` + "\n",
		`api_latency_seconds_bucket{route="index",le="0.1"} 9` + "\n",
		`api_latency_seconds_bucket{route="index",le="1"} 100` + "\n",
		`api_latency_seconds_bucket{route="index",le="+Inf"} 100` + "\n",
		"# TYPE db_latency_seconds summary\n",
		`db_latency_seconds{table="users",quantile="0.9"} 0.0898`, // 90 ms, within 0.54%
		"# TYPE plain_latency_seconds summary\n",
		`plain_latency_seconds{quantile="0.99"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, `db_latency_seconds{table="users",quantile="0.5"}`) {
		t.Errorf("the summary writes quantiles the mapping did not ask for:\n%s", text)
	}
	_, promtool := testenv.Prometheus(t)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool: %v\n%s", err, msg)
	}

	// Protobuf: native buckets for all, and the mapping's classic ones
	// beside them for api_latency only.
	fams := decode(t, encode(t, r, FormatProtobuf, o), FormatProtobuf)
	api := fams["api_latency_seconds"].GetMetric()[0].GetHistogram()
	if got := len(api.GetBucket()); got != 3 || api.GetSchema() != 6 {
		t.Errorf("api_latency_seconds: %d classic buckets, schema %d; want 3 beside the native ones", got, api.GetSchema())
	}
	if got := len(fams["plain_latency_seconds"].GetMetric()[0].GetHistogram().GetBucket()); got != 0 {
		t.Errorf("plain_latency_seconds: %d classic buckets without asking", got)
	}
	// OpenMetrics follows the mapping like the text format.
	om := decode(t, encode(t, r, FormatOpenMetrics, o), FormatOpenMetrics)
	if om["api_latency_seconds"].GetType() != dto.MetricType_HISTOGRAM || om["db_latency_seconds"].GetType() != dto.MetricType_SUMMARY {
		t.Errorf("OpenMetrics types: api %v db %v", om["api_latency_seconds"].GetType(), om["db_latency_seconds"].GetType())
	}
	if qs := om["db_latency_seconds"].GetMetric()[0].GetSummary().GetQuantile(); len(qs) != 1 || qs[0].GetQuantile() != 0.9 {
		t.Errorf("OpenMetrics db quantiles: %v", qs)
	}
}
