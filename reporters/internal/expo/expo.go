// Package expo turns a registry into the metric families every labelled
// output writes (Prometheus text, protobuf and OpenMetrics, remote write,
// OTLP): one place decides names, suffixes, labels, types and what is left
// out, so the outputs cannot disagree about them.
package expo

import (
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/mapping"
)

// Type is a family's type as Prometheus and OTLP know it.
type Type uint8

const (
	// Counter: a monotonic cumulative sum (tapes meters; counters only
	// with Options.CountersMonotonic). Name ends in "_total".
	Counter Type = iota + 1
	// Gauge: a value that may go up and down (gauges, rates, and tapes
	// counters, which can Dec: OpenTelemetry's UpDownCounter).
	Gauge
	// Histogram: a histogram or timer; Native holds its cumulative
	// buckets, Snapshot its windowed statistics.
	Histogram
)

// Sample is one series of a family.
type Sample struct {
	// Labels are sorted by name (the mapping's labels, and "worker" for a
	// per-worker gauge).
	Labels []mapping.Label
	// Value of a Counter or Gauge sample.
	Value float64
	// Native (Histogram only): cumulative counts in the registry's own
	// bucket layout; in seconds for timers.
	Native *registry.NativeHistogram
	// Snapshot (Histogram only): count and sum since start, quantiles
	// and the rest over the recent window; in seconds for timers.
	Snapshot *registry.HistogramSnapshot
	// Quantiles (Histogram only), when the family's mapping asks for a
	// summary of its own quantiles (Family.Quantiles): their values over
	// the recent window; nil otherwise.
	Quantiles []float64
	// Source is the registry name the sample comes from.
	Source string
}

// Family is a set of samples sharing a name, a type and a help text.
type Family struct {
	// Name is the full Prometheus name: a counter's ends in "_total", a
	// timer's in "_seconds" (never doubled).
	Name string
	// Unit is "seconds" for timers, "" otherwise.
	Unit string
	// Help is the help text the mapping gives, or "": see HelpText.
	Help string
	Type Type
	// Samples are sorted by labels; no two have the same labels.
	Samples []Sample

	// Observer, Buckets and Quantiles (Histogram only) are what the
	// mapping asks for this family (statsd_exporter's observer_type,
	// histogram_options.buckets, summary_options.quantiles): classic
	// buckets at Buckets, or a summary of Quantiles, in the outputs that
	// write either; ObserverDefault leaves it to the output's options.
	Observer  mapping.Observer
	Buckets   []float64
	Quantiles []float64

	src  string // the registry name (without a worker suffix) that created the family
	tail string // the default help text after src
}

// HelpText is the family's help: the mapping's, or one naming the registry
// metric it comes from and its kind.
func (f *Family) HelpText() string {
	if f.Help != "" {
		return f.Help
	}
	return f.src + f.tail
}

// AppendHelp appends HelpText to dst without building it as a string.
func (f *Family) AppendHelp(dst []byte) []byte {
	if f.Help != "" {
		return append(dst, f.Help...)
	}
	return append(append(dst, f.src...), f.tail...)
}

// Options decides what Collect makes of a registry.
type Options struct {
	// Namespace prefixes every name, joined with '_'.
	Namespace string
	// Mapper, if not nil, names and labels the metrics it matches.
	Mapper *mapping.Mapper
	// Rates adds the m1/m5/m15/mean_rate gauges of meters and timers.
	Rates bool
	// CountersMonotonic exposes tapes counters as Counter ("_total")
	// instead of Gauge: for users who never call Dec.
	CountersMonotonic bool
	// SkipNative leaves Sample.Native nil: for outputs that write only
	// the windowed statistics (text summaries), which then skip the
	// bucket export.
	SkipNative bool
	// OnSkip is called for every metric left out, with the reason.
	OnSkip func(name string, err error)
}
