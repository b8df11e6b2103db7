package statsd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/statsd_exporter/pkg/event"
	"github.com/prometheus/statsd_exporter/pkg/exporter"
	"github.com/prometheus/statsd_exporter/pkg/line"
	"github.com/prometheus/statsd_exporter/pkg/mapper"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/mapping"
	"github.com/tapes-go/tapes/wire"
)

const exporterMapping = `
mappings:
- match: "fleet.*.latency"
  name: "fleet_latency_seconds"
  observer_type: histogram
  histogram_options:
    buckets: [0.1, 0.5, 1]
  labels:
    route: "$1"
- match: "fleet.*.requests.total"
  name: "fleet_requests_total"
  labels:
    route: "$1"
`

// statsd_exporter's own parser, mapper and exporter (the code of its
// binary, run in-process) read what the reporter sends: a sampled timer's
// weights come back as every duration, and its mapping gives the labels
// tapes' own mapping gives.
func TestStatsDExporterReadsReporterOutput(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	r := registry.New()
	tm := r.Timer("fleet.index.latency")
	for i := 1; i <= 1000; i++ {
		tm.Update(time.Duration(i) * time.Millisecond)
	}
	r.Counter("fleet.index.requests").Add(42)
	rep, err := New(pc.LocalAddr().String(), r, Options{FlushInterval: 5 * time.Millisecond, TimerSamples: 50})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Report(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := rep.Close(); err != nil {
		t.Fatal(err)
	}

	// Every line the reporter sent, until it has been quiet a while.
	var lines []string
	buf := make([]byte, 65536)
	for {
		pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.Split(strings.TrimSpace(string(buf[:n])), "\n")...)
	}

	logger := slog.New(slog.DiscardHandler)
	counter := func(name string) prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: name}) }
	vec := func(name string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name}, labels)
	}
	parser := line.NewParser()
	ch := make(chan event.Events, len(lines))
	sampleErrors := vec("sample_errors", "reason")
	for _, l := range lines {
		ch <- parser.LineToEvents(l, *sampleErrors, counter("samples"), counter("tag_errors"), counter("tags"), logger)
	}
	close(ch)
	mm := &mapper.MetricMapper{Logger: logger}
	if err := mm.InitFromYAMLString(exporterMapping); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ex := exporter.NewExporter(reg, mm, logger, vec("actions", "action"), counter("unmapped"),
		vec("errors", "reason"), vec("events", "type"), vec("conflicts", "type", "name"),
		prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "metrics"}, []string{"type"}))
	ex.Listen(ch) // returns when ch is drained and closed

	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	lat := byName["fleet_latency_seconds"]
	if lat == nil || len(lat.Metric) != 1 {
		t.Fatalf("no fleet_latency_seconds histogram in statsd_exporter; families %v; lines %q", keys(byName), lines)
	}
	m := lat.Metric[0]
	if got := labelsOf(m); got != "route=index" {
		t.Errorf("statsd_exporter labels %q, want route=index", got)
	}
	h := m.GetHistogram()
	if h.GetSampleCount() != 1000 {
		t.Errorf("statsd_exporter counted %d durations, want 1000", h.GetSampleCount())
	}
	if s := h.GetSampleSum(); !near(s, 500.5, 0.01) {
		t.Errorf("statsd_exporter's sum %v s, want 500.5 within 1%%", s)
	}
	// Cumulative counts at 0.1 s and 0.5 s: 100 and 500 durations, within
	// one group (20) of rank.
	for _, b := range h.Bucket {
		want := map[float64]float64{0.1: 100, 0.5: 500, 1: 1000}[b.GetUpperBound()]
		if got := float64(b.GetCumulativeCount()); got < want-20 || got > want+20 {
			t.Errorf("bucket le=%v: %v durations, want %v (+-20)", b.GetUpperBound(), got, want)
		}
	}
	req := byName["fleet_requests_total"]
	if req == nil || len(req.Metric) != 1 || req.Metric[0].GetCounter().GetValue() != 42 || labelsOf(req.Metric[0]) != "route=index" {
		t.Errorf("fleet_requests_total in statsd_exporter: %v", req)
	}

	// tapes' own mapping of the same file gives the same name and labels.
	tm2, err := mapping.Parse([]byte(exporterMapping))
	if err != nil {
		t.Fatal(err)
	}
	res, ok := tm2.Map("fleet.index.latency", wire.KindTimer)
	if !ok || res.Name != "fleet_latency_seconds" || len(res.Labels) != 1 || res.Labels[0] != (mapping.Label{Name: "route", Value: "index"}) {
		t.Errorf("tapes mapping: %+v %v", res, ok)
	}
}

func labelsOf(m *dto.Metric) string {
	var s []string
	for _, l := range m.Label {
		s = append(s, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(s, ",")
}

func keys(m map[string]*dto.MetricFamily) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	return s
}
