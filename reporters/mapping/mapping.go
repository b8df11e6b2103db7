// Package mapping turns dotted registry names into Prometheus metric names
// and labels, reading the mapping files of prometheus/statsd_exporter, so
// that the file a team already keeps for its StatsD traffic also names what
// tapes exports.
//
// A mapping applies to every output that has labels (Prometheus text,
// protobuf and OpenMetrics, remote write, OTLP); names no mapping matches
// keep the names they have without one.
package mapping

import "github.com/tapes-go/tapes/wire"

// Label is one label of a mapped series.
type Label struct{ Name, Value string }

// Result is what a mapping makes of one registry name.
type Result struct {
	// Name is the Prometheus name before the unit and type suffixes the
	// exposition adds (a timer's "_seconds", a counter's "_total").
	Name string
	// Labels are sorted by name, with distinct names.
	Labels []Label
	// Help is the mapping's help text, or "".
	Help string
	// Drop: the mapping's action is drop; the metric is left out of every
	// output that uses the mapping.
	Drop bool
}

// Mapper maps registry names. A nil *Mapper matches nothing.
type Mapper struct {
	m mapper
}

// mapper is the matcher behind a Mapper.
type mapper interface {
	mapName(name string, kind wire.Kind) (Result, bool)
}

// Map returns what the mapping makes of the metric called name of kind
// kind, and false when no mapping matches it (the caller then derives the
// name as without a mapping).
func (m *Mapper) Map(name string, kind wire.Kind) (Result, bool) {
	if m == nil || m.m == nil {
		return Result{}, false
	}
	return m.m.mapName(name, kind)
}
