package mapping

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tapes-go/tapes/wire"
)

// Whatever the file, Parse returns a Mapper or an error, and what a
// Mapper returns keeps Result's promises: a valid name and sorted,
// distinct, valid label names, or Drop, or Err.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yml")
	bad, _ := filepath.Glob("testdata/bad/*.yml")
	for _, p := range append(files, bad...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "fleet.index.latency")
	}
	f.Add([]byte("mappings:\n- match: '(.*)'\n  match_type: regex\n  name: \"$1\"\n  labels: {ab: \"$1\"}\n"), "a.b-c.0")
	f.Fuzz(func(t *testing.T, text []byte, name string) {
		m, err := Parse(text)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "mapping: ") {
				t.Fatalf("error %q", err)
			}
			return
		}
		for _, k := range []wire.Kind{wire.KindCounter, wire.KindGauge, wire.KindTimer, wire.Kind(0)} {
			r, ok := m.Map(name, k)
			if !ok {
				if r.Name != "" || r.Labels != nil || r.Drop || r.Err != nil {
					t.Fatalf("unmatched but %+v", r)
				}
				continue
			}
			switch {
			case r.Err != nil:
				if r.Name != "" || r.Labels != nil || r.Drop {
					t.Fatalf("error with a series: %+v", r)
				}
			case r.Drop:
			default:
				if !metricNameRE.MatchString(r.Name) || strings.HasPrefix(r.Name, "__") {
					t.Fatalf("name %q", r.Name)
				}
				if !slices.IsSortedFunc(r.Labels, func(a, b Label) int { return strings.Compare(a.Name, b.Name) }) {
					t.Fatalf("labels not sorted: %v", r.Labels)
				}
				for i, l := range r.Labels {
					if !labelNameRE.MatchString(l.Name) || strings.HasPrefix(l.Name, "__") || i > 0 && r.Labels[i-1].Name == l.Name {
						t.Fatalf("label %q in %v", l.Name, r.Labels)
					}
				}
			}
		}
	})
}
