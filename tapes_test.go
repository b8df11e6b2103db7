package tapes_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tapes-go/tapes"
	"github.com/tapes-go/tapes/registry"
)

// The registry's types are the in-process handles.
var (
	_ tapes.CounterHandle   = (*registry.Counter)(nil)
	_ tapes.GaugeHandle     = (*registry.Gauge)(nil)
	_ tapes.MeterHandle     = (*registry.Meter)(nil)
	_ tapes.HistogramHandle = (*registry.Histogram)(nil)
	_ tapes.TimerHandle     = (*registry.Timer)(nil)
)

func TestConvenienceUsesDefault(t *testing.T) {
	d := registry.Default
	if tapes.Counter("roottest.c") != d.Counter("roottest.c") ||
		tapes.Meter("roottest.m") != d.Meter("roottest.m") ||
		tapes.Timer("roottest.t") != d.Timer("roottest.t") ||
		tapes.Histogram("roottest.h") != d.Histogram("roottest.h") ||
		tapes.Gauge("roottest.g", nil) != d.Gauge("roottest.g", nil) {
		t.Fatal("convenience functions do not use registry.Default")
	}
	before := tapes.Counter("roottest.c").Value() // -count=N reuses the default registry
	tapes.Counter("roottest.c").Add(2)
	tapes.Histogram("roottest.h").Update(3)
	st := tapes.Stats()["roottest"].(map[string]any)
	if st["c"].(map[string]any)["value"] != before+2 || st["h"].(map[string]any)["max"] != 3.0 {
		t.Fatalf("Stats %v", st)
	}
	if _, err := json.Marshal(tapes.Stats()); err != nil {
		t.Fatal(err)
	}
}

func TestConveniencePanicsOnConflict(t *testing.T) {
	tapes.Counter("roottest.conflict")
	defer func() {
		err, _ := recover().(error)
		if !errors.Is(err, registry.ErrKindConflict) || !strings.Contains(err.Error(), "roottest.conflict") {
			t.Fatalf("recovered %v", err)
		}
	}()
	tapes.Timer("roottest.conflict")
}

// handlerCode is application code written once against the handles.
func handlerCode(rec tapes.Recorder) {
	defer rec.Timer("app.latency").Time().Stop()
	rec.Counter("app.requests").Inc()
	rec.Meter("app.bytes").Mark(512)
	rec.Histogram("app.size").Update(512)
	rec.Gauge("app.queue", nil).Set(3)
	rec.Timer("app.db").Update(2 * time.Millisecond)
	rec.Timer("app.work").Func(func() {})
	rec.Timer("app.since").UpdateSince(time.Now())
}

func TestRecorderOnRegistry(t *testing.T) {
	r := registry.New()
	handlerCode(tapes.On(r))
	handlerCode(tapes.On(r))
	if r.Counter("app.requests").Value() != 2 || r.Meter("app.bytes").Count() != 1024 ||
		r.Timer("app.latency").Count() != 2 || r.Histogram("app.size").Count() != 2 ||
		r.Gauge("app.queue", nil).Value() != 3 || r.Timer("app.db").Snapshot().Max != 0.002 ||
		r.Timer("app.work").Count() != 2 || r.Timer("app.since").Count() != 2 {
		t.Fatalf("stats %v", r.Stats())
	}
	handlerCode(tapes.Default())
	if registry.Default.Counter("app.requests").Value() < 1 {
		t.Fatal("Default recorder")
	}
}

type ProfileHandler struct {
	Latency *registry.Timer   `tapes:"roottest.{}.latency"`
	Errors  *registry.Counter `tapes:"roottest.{}.errors"`
}

func TestBindDefault(t *testing.T) {
	h := &ProfileHandler{}
	if err := tapes.Bind(h); err != nil {
		t.Fatal(err)
	}
	if h.Latency != tapes.Timer("roottest.ProfileHandler.latency") || h.Errors != tapes.Counter("roottest.ProfileHandler.errors") {
		t.Fatalf("%+v", h)
	}
	if err := tapes.Bind(ProfileHandler{}); err == nil {
		t.Fatal("Bind of a non-pointer")
	}
}
