package main

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/tapes-go/tapes/reporters/prometheus"
)

// promFlags are the flags shaping /metrics (package prometheus's Options).
type promFlags struct {
	rates    bool
	counters string // "gauge" or "counter"
	classic  classicFlag
}

func (p *promFlags) declare(fs *flag.FlagSet) {
	fs.BoolVar(&p.rates, "prometheus-rates", false, "add the m1/m5/m15/mean_rate gauges of meters and timers to /metrics (off: Prometheus users take rate() of the _total counter)")
	fs.StringVar(&p.counters, "prometheus-counters", "gauge", "how /metrics types tapes counters: gauge (faithful: a tapes counter can Dec, and rate() reads a decrease as a reset; OpenTelemetry's UpDownCounter) or counter (name_total, for counters that only go up)")
	fs.Var(&p.classic, "prometheus-classic-buckets", "write histograms and timers with classic _bucket series (text and OpenMetrics: instead of summaries; protobuf: beside the native buckets): alone or =pow2 for powers of two spanning each family's values (exact), or =B1,B2,... for fixed upper bounds (timers in seconds; the same on every host, so they add up across a fleet)")
}

func (p *promFlags) validate() error {
	if p.counters != "gauge" && p.counters != "counter" {
		return fmt.Errorf("-prometheus-counters %q: want gauge or counter", p.counters)
	}
	return nil
}

// options are the Prometheus options the flags give.
func (p *promFlags) options() prometheus.Options {
	return prometheus.Options{
		Rates:             p.rates,
		CountersMonotonic: p.counters == "counter",
		ClassicBuckets:    p.classic.on,
		ClassicBounds:     p.classic.bounds,
	}
}

// classicFlag is -prometheus-classic-buckets: a bool flag that also takes
// bounds.
type classicFlag struct {
	on     bool
	bounds []float64 // nil: powers of two
	text   string
}

func (c *classicFlag) IsBoolFlag() bool { return true }
func (c *classicFlag) String() string   { return c.text }

func (c *classicFlag) Set(v string) error {
	switch v {
	case "true", "pow2":
		*c = classicFlag{on: true, text: v}
		return nil
	case "false", "":
		*c = classicFlag{text: v}
		return nil
	}
	var bounds []float64
	for _, f := range strings.Split(v, ",") {
		b, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || math.IsNaN(b) || math.IsInf(b, 0) {
			return fmt.Errorf("bound %q: want a finite number (+Inf is implied)", f)
		}
		if len(bounds) > 0 && b <= bounds[len(bounds)-1] {
			return fmt.Errorf("bound %g after %g: bounds must ascend", b, bounds[len(bounds)-1])
		}
		bounds = append(bounds, b)
	}
	*c = classicFlag{on: true, bounds: bounds, text: v}
	return nil
}
