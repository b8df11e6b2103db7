// Package mapping turns dotted registry names into Prometheus metric names
// and labels, reading the mapping files of prometheus/statsd_exporter, so
// that the file a team already keeps for its StatsD traffic also names what
// tapes exports.
//
// A mapping applies to every output that has labels (Prometheus text,
// protobuf and OpenMetrics, remote write, OTLP); names no mapping matches
// keep the names they have without one. StatsD output stays dotted: a
// statsd_exporter receiving it applies the same file itself.
//
// The file format is statsd_exporter's, read and matched by its own
// package (github.com/prometheus/statsd_exporter/pkg/mapper), so globs,
// regexes, ordering and "$1" captures behave exactly as there:
//
//	mappings:
//	- match: "fleet.*.latency"
//	  name: "fleet_latency"
//	  labels:
//	    route: "$1"
//	- match: "debug.*"
//	  name: "dropped"
//	  action: drop
//
// match_metric_type sees tapes kinds as StatsD types: counters and meters
// are "counter", gauges "gauge", timers and histograms "observer".
// observer_type, histogram_options.buckets and summary_options.quantiles
// are passed on in Result for timers and histograms. The options that
// shape statsd_exporter's own storage (ttl, native histogram factors,
// summary max_age, age_buckets, buf_cap) do not apply: the registry keeps
// its own buckets and window. honor_labels has nothing to act on (tapes
// names carry no tags). scale is refused: tapes exports the values it
// recorded, and a file that asks for scaled values must not silently get
// unscaled ones.
package mapping

import (
	"sync/atomic"

	"github.com/tapes-go/tapes/wire"
)

// Label is one label of a mapped series.
type Label struct{ Name, Value string }

// Observer is how a mapping asks a timer or histogram to be exposed
// (statsd_exporter's observer_type).
type Observer string

const (
	// ObserverDefault: the file does not say; the writer's default
	// (native histogram, plus whatever it exposes beside it).
	ObserverDefault Observer = ""
	// ObserverHistogram: classic buckets (Result.Buckets).
	ObserverHistogram Observer = "histogram"
	// ObserverSummary: quantiles (Result.Quantiles).
	ObserverSummary Observer = "summary"
)

// Result is what a mapping makes of one registry name.
type Result struct {
	// Name is the Prometheus name before the unit and type suffixes the
	// exposition adds (a timer's "_seconds", a counter's "_total"). It is
	// a valid Prometheus metric name, escaped as statsd_exporter escapes
	// it (bytes outside [a-zA-Z0-9_] become '_', a leading digit gets a
	// '_' before it), so both name a series alike.
	Name string
	// Labels are sorted by name, with distinct names. The slice is shared
	// by every call for the same name: do not modify its elements
	// (appending is safe, it has no spare capacity).
	Labels []Label
	// Help is the mapping's help text, or "".
	Help string
	// Drop: the mapping's action is drop; the metric is left out of every
	// output that uses the mapping.
	Drop bool

	// Observer, for timers and histograms only: how the mapping asks the
	// metric to be exposed ("" for other kinds).
	Observer Observer
	// Buckets, with ObserverHistogram: the classic bucket upper bounds
	// (histogram_options.buckets, or the file's default, or Prometheus'
	// default buckets), in seconds for timers, ascending.
	Buckets []float64
	// Quantiles, with ObserverSummary: the quantiles to expose
	// (summary_options.quantiles, or the file's default, or 0.5, 0.9,
	// 0.99), ascending.
	Quantiles []float64

	// Err is not nil when a mapping matched but what it makes is not a
	// valid Prometheus series (an empty name after expanding captures,
	// a label reserved for the type, ...). Name and Labels are then empty:
	// the metric is to be left out of the output and counted, like any
	// other metric an output cannot write.
	Err error
}

// Mapper maps registry names. A nil or zero Mapper matches nothing. It is
// safe for concurrent use, and Replace changes what it maps while outputs
// hold it (a reloaded file).
type Mapper struct {
	p atomic.Pointer[holder]
}

type holder struct{ m mapper }

func newMapper(m mapper) *Mapper {
	mp := &Mapper{}
	mp.p.Store(&holder{m})
	return mp
}

// Replace makes m map as other does from now on (nil: match nothing), so
// that every output holding m follows a reloaded file at its next report.
func (m *Mapper) Replace(other *Mapper) {
	var h *holder
	if other != nil {
		h = other.p.Load()
	}
	m.p.Store(h)
}

// mapper is the matcher behind a Mapper.
type mapper interface {
	mapName(name string, kind wire.Kind) (Result, bool)
}

// Map returns what the mapping makes of the metric called name of kind
// kind, and false when no mapping matches it (the caller then derives the
// name as without a mapping). A matched result with Drop set, or with Err
// set, is to be left out.
func (m *Mapper) Map(name string, kind wire.Kind) (Result, bool) {
	if m == nil {
		return Result{}, false
	}
	h := m.p.Load()
	if h == nil {
		return Result{}, false
	}
	return h.m.mapName(name, kind)
}
