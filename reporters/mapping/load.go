package mapping

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	sem "github.com/prometheus/statsd_exporter/pkg/mapper"
	"go.yaml.in/yaml/v2"

	"github.com/tapes-go/tapes/wire"
)

// Load reads the statsd_exporter mapping file at path (see Parse).
func Load(path string) (*Mapper, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	m, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("mapping: %s: %w", path, err)
	}
	return m, nil
}

// Parse reads a statsd_exporter mapping file. It fails on anything
// statsd_exporter would refuse (unknown fields, bad globs or regexes,
// invalid names or label names), and on what tapes cannot honour (scale,
// label names Prometheus reserves), naming the mapping at fault; a file
// with no mappings is valid and matches nothing.
func Parse(yamlText []byte) (*Mapper, error) {
	m, err := parse(yamlText)
	if err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	return m, nil
}

// The rules statsd_exporter's mapper applies when it loads a file
// (pkg/mapper/mapper.go), checked here first so that an error can name
// the mapping; its loader checks them again.
var (
	globRE      = regexp.MustCompile(`^(\*|[a-zA-Z_]([a-zA-Z0-9_\-])*)(\.\*|\.[a-zA-Z0-9_]([a-zA-Z0-9_\-])*)*$`)
	nameTmplRE  = regexp.MustCompile(`^([a-zA-Z_]|(\$\{?\d+\}?))([a-zA-Z0-9_]|(\$\{?\d+\}?))*$`)
	labelNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]+$`)
	// metricNameRE is Prometheus' metric name rule (without the UTF-8
	// names of Prometheus 3, which older scrapers and remote-write
	// receivers refuse).
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
)

func parse(b []byte) (*Mapper, error) {
	// The same struct and the same strict decoding as the mapper's loader,
	// so that yaml's errors (with their line numbers) come out here.
	var cfg sem.MetricMapper
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		// One line per error for logs: yaml lists its errors on lines of
		// their own.
		return nil, errors.New(strings.ReplaceAll(err.Error(), ":\n  ", ": "))
	}
	if err := checkOptions(cfg.Defaults.HistogramOptions.Buckets, cfg.Defaults.SummaryOptions.Quantiles); err != nil {
		return nil, fmt.Errorf("defaults: %w", err)
	}
	for i := range cfg.Mappings {
		if err := check(&cfg.Mappings[i], &cfg.Defaults); err != nil {
			return nil, fmt.Errorf("rule %d (match %q): %w", i+1, cfg.Mappings[i].Match, err)
		}
	}
	mm := &sem.MetricMapper{}
	if err := mm.InitFromYAMLString(string(b)); err != nil {
		return nil, err
	}
	return newMapper(&matcher{mm: mm, max: cacheSize}), nil
}

// check applies statsd_exporter's rules and tapes' own to one mapping.
func check(mp *sem.MetricMapping, def *sem.MapperConfigDefaults) error {
	mt := mp.MatchType
	if mt == sem.MatchTypeDefault {
		mt = def.MatchType
	}
	if mt == sem.MatchTypeRegex {
		if _, err := regexp.Compile(mp.Match); err != nil {
			return fmt.Errorf("invalid regex: %w", err)
		}
	} else if !globRE.MatchString(mp.Match) {
		return errors.New("invalid glob: dot-separated segments of [a-zA-Z0-9_-] or *, the first not starting with a digit")
	}
	if mp.Name == "" {
		return errors.New("no name (every mapping needs one, even a drop)")
	}
	if !nameTmplRE.MatchString(mp.Name) {
		return fmt.Errorf("name %q: only [a-zA-Z0-9_] and $n captures, not starting with a digit", mp.Name)
	}
	for _, k := range slices.Sorted(maps.Keys(mp.Labels)) { // the same error every time
		if !labelNameRE.MatchString(k) {
			return fmt.Errorf("label name %q: [a-zA-Z_][a-zA-Z0-9_]+ (at least 2 bytes, statsd_exporter's rule)", k)
		}
		if strings.HasPrefix(k, "__") {
			return fmt.Errorf("label name %q: names starting with __ are reserved by Prometheus", k)
		}
	}
	if mp.Scale.Set && mp.Scale.Val != 1 {
		return fmt.Errorf("scale %v: not supported (tapes exports the values it recorded, unscaled)", mp.Scale.Val)
	}
	ot := mp.ObserverType
	if ot == sem.ObserverTypeDefault {
		ot = def.ObserverType
	}
	if ot == sem.ObserverTypeHistogram && mp.SummaryOptions != nil {
		return errors.New("summary_options on a histogram observer")
	}
	if ot == sem.ObserverTypeSummary && mp.HistogramOptions != nil {
		return errors.New("histogram_options on a summary observer")
	}
	var bs []float64
	var qs []sem.MetricObjective
	if mp.HistogramOptions != nil {
		bs = mp.HistogramOptions.Buckets
	}
	if mp.SummaryOptions != nil {
		qs = mp.SummaryOptions.Quantiles
	}
	return checkOptions(bs, qs)
}

// checkOptions refuses buckets and quantiles no exposition can write: the
// Prometheus client would panic on them where statsd_exporter uses them.
func checkOptions(buckets []float64, qs []sem.MetricObjective) error {
	bs := slices.Sorted(slices.Values(buckets))
	for i, b := range bs {
		if math.IsNaN(b) {
			return errors.New("histogram_options.buckets: NaN")
		}
		if i > 0 && b == bs[i-1] {
			return fmt.Errorf("histogram_options.buckets: %v twice", b)
		}
	}
	for _, q := range qs {
		if !(q.Quantile >= 0 && q.Quantile <= 1) {
			return fmt.Errorf("summary_options.quantiles: %v is not in [0, 1]", q.Quantile)
		}
	}
	return nil
}

// cacheSize bounds the results a Mapper keeps: registries hold a bounded
// number of names (tapes-host's -max-metrics, 100000 by default), each
// mapped once per output pass, so a cache this size holds them all in the
// common case, and a registry with more names costs re-matching, not
// memory.
const cacheSize = 1 << 17

// matcher caches the mapper's answers per name: the outputs map every
// name on every scrape or push, and the names repeat. The caches are
// sync.Maps (one per StatsD type), written once per name and then only
// read, which is what they are fast at: no lock shared by readers.
type matcher struct {
	mm *sem.MetricMapper

	cache [3]sync.Map // by statsdType index: name -> Result (a miss: Result{})
	n     atomic.Int64
	max   int64
}

// statsdType is the StatsD type a tapes kind is matched as
// (match_metric_type), and its cache.
func statsdType(k wire.Kind) (sem.MetricType, int) {
	switch k {
	case wire.KindCounter, wire.KindMeter:
		return sem.MetricTypeCounter, 0
	case wire.KindGauge:
		return sem.MetricTypeGauge, 1
	case wire.KindTimer, wire.KindHistogram:
		return sem.MetricTypeObserver, 2
	}
	return "", -1
}

func (m *matcher) mapName(name string, kind wire.Kind) (Result, bool) {
	t, ci := statsdType(kind)
	if ci < 0 {
		return Result{}, false
	}
	var r Result
	if v, hit := m.cache[ci].Load(name); hit {
		r = v.(Result)
	} else {
		r = m.compute(name, t)
		for m.n.Load() >= m.max {
			m.evict()
		}
		if _, loaded := m.cache[ci].LoadOrStore(name, r); !loaded {
			m.n.Add(1)
		}
	}
	return r, r.Name != "" || r.Drop || r.Err != nil
}

// evict removes an arbitrary cached result (sync.Map's order is its hash
// order, unrelated to use): a registry with more names than the cache
// holds costs re-matching, not memory.
func (m *matcher) evict() {
	for i := range m.cache {
		deleted := false
		m.cache[i].Range(func(k, _ any) bool {
			if _, ok := m.cache[i].LoadAndDelete(k); ok {
				m.n.Add(-1)
				deleted = true
			}
			return !deleted
		})
		if deleted {
			return
		}
	}
	// Everything was evicted by others in the meantime.
}

func (m *matcher) compute(name string, t sem.MetricType) Result {
	mp, labels, ok := m.mm.GetMapping(name, t)
	if !ok || mp == nil {
		return Result{}
	}
	if mp.Action == sem.ActionTypeDrop {
		return Result{Drop: true}
	}
	fail := func(format string, args ...any) Result {
		return Result{Err: fmt.Errorf("mapping (match %q): "+format, append([]any{mp.Match}, args...)...)}
	}
	// statsd_exporter escapes what the mapping made; tapes does the same,
	// so that one file names a series alike on both paths.
	pn := sem.EscapeMetricName(mp.Name)
	if pn == "" {
		return fail("the name is empty once its captures are expanded")
	}
	if !metricNameRE.MatchString(pn) || strings.HasPrefix(pn, "__") {
		return fail("%q is not a valid Prometheus metric name", pn)
	}
	r := Result{Name: pn, Help: mp.HelpText}
	if len(labels) > 0 {
		r.Labels = make([]Label, 0, len(labels))
		for k, v := range labels {
			r.Labels = append(r.Labels, Label{k, v})
		}
		sort.Slice(r.Labels, func(i, j int) bool { return r.Labels[i].Name < r.Labels[j].Name })
		for _, l := range r.Labels {
			if t == sem.MetricTypeObserver && (l.Name == "le" || l.Name == "quantile") {
				// The exposition of a histogram or summary adds them.
				return fail("label %q is reserved for the buckets and quantiles of timers and histograms", l.Name)
			}
			if !utf8.ValidString(l.Value) {
				return fail("label %s: value is not UTF-8", l.Name)
			}
		}
	}
	if t == sem.MetricTypeObserver {
		r.Observer = Observer(mp.ObserverType)
		if r.Observer == ObserverDefault {
			r.Observer = Observer(m.mm.Defaults.ObserverType)
		}
		switch r.Observer {
		case ObserverHistogram:
			if mp.HistogramOptions != nil {
				r.Buckets = slices.Clip(slices.Sorted(slices.Values(mp.HistogramOptions.Buckets)))
			}
			if len(r.Buckets) == 0 {
				r.Buckets = slices.Clone(m.mm.Defaults.HistogramOptions.Buckets)
			}
		case ObserverSummary:
			qs := m.mm.Defaults.SummaryOptions.Quantiles
			if mp.SummaryOptions != nil && len(mp.SummaryOptions.Quantiles) > 0 {
				qs = mp.SummaryOptions.Quantiles
			}
			for _, q := range qs {
				r.Quantiles = append(r.Quantiles, q.Quantile)
			}
			slices.Sort(r.Quantiles)
			r.Quantiles = slices.Clip(r.Quantiles)
		}
	}
	return r
}
