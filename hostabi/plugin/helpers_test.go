package plugin_test

import (
	"math"
	"testing"

	"github.com/tapes-go/tapes/registry"
)

// checkEveryKind is hostabi's test helper of that name: the values the
// guests' record_all leaves after n calls.
func checkEveryKind(t *testing.T, r *registry.Registry, prefix string, n int) {
	t.Helper()
	get := func(name string) registry.Metric {
		m, ok := r.Get(prefix + name)
		if !ok {
			t.Fatalf("metric %q missing; registry has %d metrics", prefix+name, r.Len())
		}
		return m
	}
	if v := get("requests").(*registry.Counter).Value(); v != int64(7*n) {
		t.Errorf("counter = %d, want %d", v, 7*n)
	}
	if v := get("temperature").(*registry.Gauge).Value(); v != 42.5 {
		t.Errorf("gauge = %v, want 42.5", v)
	}
	if v := get("bytes").(*registry.Meter).Count(); v != int64(6*n) {
		t.Errorf("meter = %d, want %d", v, 6*n)
	}
	ts := get("latency").(*registry.Timer).Snapshot()
	if ts.Count != uint64(2*n) || math.Abs(ts.Sum-0.003*float64(n)) > 1e-12*float64(n) { // float rounding grows with n
		t.Errorf("timer count %d sum %v, want %d and %v", ts.Count, ts.Sum, 2*n, 0.003*float64(n))
	}
	hs := get("size").(*registry.Histogram).Snapshot()
	if hs.Count != uint64(2*n) || hs.Sum != 4*float64(n) {
		t.Errorf("histogram count %d sum %v, want %d and %v", hs.Count, hs.Sum, 2*n, 4*float64(n))
	}
}
