package grafana

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/tapes-go/tapes/internal/reportertest"
)

type target struct {
	RefID      string          `json:"refId"`
	Expr       string          `json:"expr"`
	Datasource json.RawMessage `json:"datasource"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	GridPos    *struct{ H, W, X, Y int }
	Targets    []target `json:"targets"`
	Panels     []panel  `json:"panels"`
}

type dashboard struct {
	Inputs []struct {
		Name, Type, PluginID string
	} `json:"__inputs"`
	SchemaVersion int     `json:"schemaVersion"`
	UID           string  `json:"uid"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

const wantDS = `{"type":"prometheus","uid":"${DS_PROMETHEUS}"}`

func compact(t *testing.T, raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("datasource %s: %v", raw, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func load(t *testing.T) (dashboard, []panel) {
	t.Helper()
	b, err := os.ReadFile("tapes.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("tapes.json: %v", err)
	}
	var all []panel
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return d, all
}

func TestDashboardShape(t *testing.T) {
	d, panels := load(t)
	if d.SchemaVersion < 36 || d.UID == "" {
		t.Errorf("schemaVersion %d, uid %q", d.SchemaVersion, d.UID)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v, want the one DS_PROMETHEUS datasource input", d.Inputs)
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range panels {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d repeated or 0", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if ds := compact(t, p.Datasource); ds != wantDS {
			t.Errorf("panel %q: datasource %s, want %s", p.Title, ds, wantDS)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			if tg.Expr == "" || tg.RefID == "" {
				t.Errorf("panel %q: target %+v", p.Title, tg)
			}
			if ds := compact(t, tg.Datasource); ds != wantDS {
				t.Errorf("panel %q %s: datasource %s", p.Title, tg.RefID, ds)
			}
		}
	}
	if queries < 20 {
		t.Errorf("%d queries; the dashboard lost panels", queries)
	}
}

// vars gives each template variable a value for the parse check; a
// variable the dashboard uses that is not here fails the test.
var vars = map[string]string{
	"instance":        ".*",
	"timer":           "fleet_latency_seconds",
	"by":              "route",
	"__rate_interval": "1m",
	"__range":         "1h",
}

var varRE = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

func expand(t *testing.T, expr string) string {
	return varRE.ReplaceAllStringFunc(expr, func(m string) string {
		name := varRE.FindStringSubmatch(m)[1]
		v, ok := vars[name]
		if !ok {
			t.Errorf("query %q uses variable $%s the test does not know", expr, name)
		}
		return v
	})
}

// Every query of the dashboard, with its variables filled in, is valid
// PromQL for a real Prometheus (2.42 here, the oldest the dashboard
// claims; native histogram functions included). Prometheus answers a
// parse error with status "error", which Query returns.
func TestQueriesParseInRealPrometheus(t *testing.T) {
	d, panels := load(t)
	prom := reportertest.StartPrometheus(t)

	// The check can fail: a broken query is refused.
	if _, err := prom.Query(`sum by (route) (rate(x[1m])`); err == nil {
		t.Fatal("Prometheus accepted a query with an unclosed parenthesis")
	}
	n := 0
	for _, p := range panels {
		for _, tg := range p.Targets {
			q := expand(t, tg.Expr)
			if _, err := prom.Query(q); err != nil {
				t.Errorf("panel %q %s: %v", p.Title, tg.RefID, err)
			}
			n++
		}
	}
	// The variables' own queries: label_values(selector, label) takes a
	// series selector.
	lv := regexp.MustCompile(`^label_values\((.+), *[a-zA-Z_]+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		if m := lv.FindStringSubmatch(q.Query); m != nil {
			if _, err := prom.Query(m[1]); err != nil {
				t.Errorf("variable %s: %v", v.Name, err)
			}
			n++
		}
	}
	t.Logf("%d queries parsed", n)
}
