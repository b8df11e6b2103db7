package tests

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/fleetdata"
	"github.com/tapes-go/tapes/internal/reportertest"
)

// TestFleetQuantilesInPrometheus is the fleet of docs/fleet.md: three
// tapes-hosts, each with two workers, labelled by the same
// statsd_exporter-format mapping file, scraped by one real Prometheus with
// native histograms on. The fleet-wide p50 and p99 per route that PromQL
// computes from the summed native histograms must be within 1.5% of the
// exact nearest-rank quantiles of every value the six workers recorded
// (schema 6 buckets are 1.09% wide).
func TestFleetQuantilesInPrometheus(t *testing.T) {
	const hosts, workersPerHost, n = 3, 2, 20000
	mapping := filepath.Join("..", "examples", "fleet", "mapping.yml")
	var targets []string
	pooled := map[string][]time.Duration{}
	seed := uint64(1)
	for i := range hosts {
		h := startHost(t, "-shm", filepath.Join(t.TempDir(), fmt.Sprintf("h%d.shm", i)), "-http", "127.0.0.1:0",
			"-ring", "65536", "-mapping", mapping)
		for range workersPerHost {
			w := worker(t, h.shm, "-fleet", fmt.Sprint(seed), "-n", fmt.Sprint(n))
			if err := w.Wait(); err != nil {
				t.Fatalf("fleet worker: %v", err)
			}
			for route := range fleetdata.Routes {
				pooled[route] = append(pooled[route], fleetdata.Values(seed, route, n)...)
			}
			seed++
		}
		h.waitStat("fleet.search.latency.count", eq(workersPerHost*n), "every value drained")
		targets = append(targets, h.addr)
	}

	p := reportertest.StartPrometheusWith(t, []string{"--enable-feature=native-histograms"}, targets...)
	routes := fleetdata.SortedRoutes()
	// Every host's histograms must be in before the quantiles mean anything.
	p.WaitFor(`sum by (route) (histogram_count(fleet_latency_seconds))`, 60*time.Second, func(s []reportertest.Sample) bool {
		if len(s) != len(routes) {
			return false
		}
		for _, x := range s {
			if x.Value != hosts*workersPerHost*n {
				return false
			}
		}
		return true
	})
	for _, q := range []float64{0.5, 0.99} {
		res, err := p.Query(fmt.Sprintf(`histogram_quantile(%g, sum by (route) (fleet_latency_seconds))`, q))
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != len(routes) {
			t.Fatalf("q%g: %d series, want one per route: %v", q, len(res), res)
		}
		for _, s := range res {
			route := s.Metric["route"]
			exact := fleetdata.Quantile(pooled[route], q)
			rel := math.Abs(s.Value-exact) / exact
			t.Logf("route %-6s q%-4g PromQL %.6f s  exact %.6f s  error %.3f%%", route, q, s.Value, exact, 100*rel)
			if rel > 0.015 {
				t.Errorf("route %s q%g: PromQL %v, exact pooled %v (%.2f%% off, want <= 1.5%%)", route, q, s.Value, exact, 100*rel)
			}
		}
	}
	res, err := p.Query(`sum by (route) (fleet_requests)`)
	if err != nil || len(res) != len(routes) {
		t.Fatalf("fleet_requests by route: %v, %v", res, err)
	}
	for _, s := range res {
		if s.Value != hosts*workersPerHost*n {
			t.Errorf("fleet_requests{route=%q} summed = %v, want %d", s.Metric["route"], s.Value, hosts*workersPerHost*n)
		}
	}
}
