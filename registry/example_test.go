package registry_test

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/tapes-go/tapes/registry"
)

func ExampleRegistry_Stats() {
	r := registry.New()
	r.Counter("http.requests").Add(2)
	r.Gauge("queue.depth", func() float64 { return 7 })
	json.NewEncoder(os.Stdout).Encode(r.Stats())
	// Output: {"http":{"requests":{"value":2}},"queue":{"depth":{"value":7}}}
}

func ExampleHistogram_Native() {
	h := registry.New().Histogram("payload.bytes")
	for _, v := range []float64{1, 1, 2, 1024} {
		h.Update(v)
	}
	n := h.Native()
	// Schema 6: bucket i holds (2^((i-1)/64), 2^(i/64)]; 1 is the top of
	// bucket 0, 2 of bucket 64, 1024 of bucket 640.
	fmt.Println(n.Schema, n.Count, n.Sum, n.PositiveSpans, n.PositiveCounts)
	// Output: 6 4 1028 [{0 1} {63 1} {575 1}] [2 1 1]
}

func ExampleTimer_Snapshot() {
	t := registry.New().Timer("db.query")
	for i := 1; i <= 100; i++ {
		t.Update(time.Duration(i) * time.Millisecond)
	}
	s := t.Snapshot()
	// Seconds; quantiles are bucket midpoints, within 0.54% of the exact
	// nearest-rank value (50 ms and 99 ms here).
	fmt.Printf("count %d, max %.3f s, p50 %.4f s, p99 %.4f s\n", s.Count, s.Max, s.Quantiles[0], s.Quantiles[4])
	// Output: count 100, max 0.100 s, p50 0.0501 s, p99 0.0990 s
}
