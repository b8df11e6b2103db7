// Command exact prints the exact pooled nearest-rank p50 and p99 per route
// of what fleet workers with seeds 1..N record (examples/fleet/run.sh), to
// set beside what Prometheus computes.
package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/tapes-go/tapes/internal/fleetdata"
)

func main() {
	seeds := flag.Uint64("seeds", 6, "workers, seeded 1..seeds")
	n := flag.Int("n", 20000, "values per route per worker")
	flag.Parse()
	for _, route := range fleetdata.SortedRoutes() {
		var all []time.Duration
		for s := uint64(1); s <= *seeds; s++ {
			all = append(all, fleetdata.Values(s, route, *n)...)
		}
		fmt.Printf("%s %.6f %.6f\n", route, fleetdata.Quantile(all, 0.5), fleetdata.Quantile(all, 0.99))
	}
}
