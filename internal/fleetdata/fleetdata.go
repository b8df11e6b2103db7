// Package fleetdata generates the latencies the fleet test's workers
// record, so that the test can compute the exact pooled quantiles from the
// same values without asking the workers for them.
package fleetdata

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Routes are the routes every fleet worker serves, with their median
// latency: each is a log-normal with sigma 1 around it.
var Routes = map[string]time.Duration{
	"index":  2 * time.Millisecond,
	"login":  30 * time.Millisecond,
	"search": 120 * time.Millisecond,
}

// SortedRoutes are the names of Routes in order.
func SortedRoutes() []string {
	rs := make([]string, 0, len(Routes))
	for r := range Routes {
		rs = append(rs, r)
	}
	slices.Sort(rs)
	return rs
}

// Values returns the n latencies that the worker with seed records for
// route. Different seeds (hosts) scale the median differently, so that the
// fleet's quantiles are not any one host's.
func Values(seed uint64, route string, n int) []time.Duration {
	h := fnv.New64a()
	h.Write([]byte(route))
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	median := float64(Routes[route]) * (1 + 0.5*float64(seed%3))
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(median * math.Exp(rng.NormFloat64()))
		if out[i] <= 0 {
			out[i] = 1
		}
	}
	return out
}

// Quantile is the exact nearest-rank q-quantile of vs, in seconds as the
// registry records durations.
func Quantile(vs []time.Duration, q float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	k := int(math.Ceil(q*float64(len(s)))) - 1
	k = max(0, min(k, len(s)-1))
	return float64(s[k]) / 1e9
}
