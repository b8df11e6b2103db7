package mapping_test

import (
	"fmt"

	"github.com/tapes-go/tapes/reporters/mapping"
	"github.com/tapes-go/tapes/wire"
)

// The issue's example: one mapping turns every route's latency timer into
// one family with a route label.
func Example() {
	m, err := mapping.Parse([]byte(`
mappings:
- match: "fleet.*.latency"
  name: "fleet_latency"
  labels:
    route: "$1"
- match: "debug.*"
  name: "debug"
  action: drop
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	r, ok := m.Map("fleet.index.latency", wire.KindTimer)
	fmt.Println(ok, r.Name, r.Labels)
	r, ok = m.Map("debug.cache", wire.KindCounter)
	fmt.Println(ok, r.Drop)
	_, ok = m.Map("other.latency", wire.KindTimer)
	fmt.Println(ok)

	_, err = mapping.Parse([]byte("mappings:\n- match: \"a..b\"\n  name: ab\n"))
	fmt.Println(err)
	// Output:
	// true fleet_latency [{route index}]
	// true true
	// false
	// mapping: rule 1 (match "a..b"): invalid glob: dot-separated segments of [a-zA-Z0-9_-] or *, the first not starting with a digit
}
