package main

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/prometheus"
)

func TestPrometheusFlags(t *testing.T) {
	parse := func(args ...string) (*config, error) {
		c, _, err := parseServeFlags("tapes-host", append([]string{"-shm", t.TempDir() + "/x.shm"}, args...), io.Discard, "")
		return c, err
	}
	c, err := parse()
	if err != nil {
		t.Fatal(err)
	}
	if o := c.prom.options(); o.Rates || o.CountersMonotonic || o.ClassicBuckets {
		t.Errorf("defaults %+v: want no rates, counters as gauges, summaries", o)
	}
	for _, tc := range []struct {
		args   []string
		check  func(prometheus.Options) bool
		errSub string
	}{
		{[]string{"-prometheus-rates"}, func(o prometheus.Options) bool { return o.Rates }, ""},
		{[]string{"-prometheus-counters=counter"}, func(o prometheus.Options) bool { return o.CountersMonotonic }, ""},
		{[]string{"-prometheus-counters", "gauge"}, func(o prometheus.Options) bool { return !o.CountersMonotonic }, ""},
		{[]string{"-prometheus-counters=total"}, nil, "-prometheus-counters \"total\": want gauge or counter"},
		{[]string{"-prometheus-classic-buckets"}, func(o prometheus.Options) bool { return o.ClassicBuckets && o.ClassicBounds == nil }, ""},
		{[]string{"-prometheus-classic-buckets=pow2"}, func(o prometheus.Options) bool { return o.ClassicBuckets && o.ClassicBounds == nil }, ""},
		{[]string{"-prometheus-classic-buckets=false"}, func(o prometheus.Options) bool { return !o.ClassicBuckets }, ""},
		{[]string{"-prometheus-classic-buckets=0.005, 0.01,0.1,1"}, func(o prometheus.Options) bool {
			return o.ClassicBuckets && slices.Equal(o.ClassicBounds, []float64{0.005, 0.01, 0.1, 1})
		}, ""},
		{[]string{"-prometheus-classic-buckets=1,0.5"}, nil, "bounds must ascend"},
		{[]string{"-prometheus-classic-buckets=1,+Inf"}, nil, "want a finite number"},
		{[]string{"-prometheus-classic-buckets=fast"}, nil, "want a finite number"},
	} {
		c, err := parse(tc.args...)
		if tc.errSub != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errSub) {
				t.Errorf("%v: err %v, want %q", tc.args, err, tc.errSub)
			}
			continue
		}
		if err != nil || !tc.check(c.prom.options()) {
			t.Errorf("%v: %+v, %v", tc.args, c.prom.options(), err)
		}
	}
}

// A metric left out of /metrics is counted and logged once through the
// host's logger, whose level applies.
func TestPrometheusSkipsCountedAndLogged(t *testing.T) {
	for _, level := range []string{"info", "error"} {
		cfg := &config{}
		if err := (levelFlag{&cfg.logLevel}).Set(level); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		h := &host{cfg: cfg, log: newLogger(cfg, &logs), reg: registry.New()}
		s := h.promSkips()
		h.reg.Counter("a.b").Inc()
		h.reg.Counter("a_b").Inc() // a_b, as a.b writes
		h.reg.Histogram("h").Update(1)
		h.reg.Gauge("h_sum", nil).Set(1) // written by histogram h
		o := prometheus.Options{OnSkip: s.skip}
		for range 3 {
			if err := prometheus.Write(io.Discard, h.reg, o); err != nil {
				t.Fatal(err)
			}
		}
		var out bytes.Buffer
		if err := prometheus.Write(&out, h.reg, o); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "\ntapes_host_prometheus_skipped 2\n") {
			t.Errorf("level %s: the skip count is not 2 in\n%s", level, out.String())
		}
		n := strings.Count(logs.String(), "metric left out of /metrics")
		if level == "info" && (n != 2 || !strings.Contains(logs.String(), "metric=a_b") || !strings.Contains(logs.String(), "metric=h_sum")) {
			t.Errorf("want one warning per skipped name, got:\n%s", logs.String())
		}
		if level == "error" && n != 0 {
			t.Errorf("-log-level error still logs skips:\n%s", logs.String())
		}
	}
}
