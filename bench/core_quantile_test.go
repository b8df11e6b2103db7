package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	gometrics "github.com/rcrowley/go-metrics"

	"github.com/tapes-go/tapes/registry"
)

// TestQuantileErrorVsPeers feeds the same log-normal samples to tapes, a
// go-metrics ExpDecay reservoir (what tapes 0.3 and Dropwizard use) and a
// prometheus Summary, and logs the mean |relative error| against the exact
// nearest-rank quantiles. It asserts only tapes' own bound; the peers'
// figures are for docs/core.md.
func TestQuantileErrorVsPeers(t *testing.T) {
	const n, seeds = 1_000_000, 3
	qs := []float64{0.5, 0.99, 0.999}
	sum := map[string][]float64{}
	for seed := range uint64(seeds) {
		rng := rand.New(rand.NewPCG(seed, 99))
		vals := make([]float64, n)
		for i := range vals {
			vals[i] = math.Exp(rng.NormFloat64()) // seconds, log-normal
		}
		th := registry.New().Histogram("h")
		gh := gometrics.NewHistogram(gometrics.NewExpDecaySample(1028, 0.015))
		ps := prometheus.NewSummary(prometheus.SummaryOpts{
			Name:       "s",
			Objectives: map[float64]float64{0.5: 0.05, 0.99: 0.001, 0.999: 0.0001},
		})
		for _, v := range vals {
			th.Update(v)
			gh.Update(int64(v * 1e9))
			ps.Observe(v)
		}
		slices.Sort(vals)
		exact := func(q float64) float64 { return vals[int(math.Ceil(q*n))-1] }
		sk := th.Sketch()
		gp := gh.Snapshot().Percentiles(qs)
		var m dto.Metric
		if err := ps.Write(&m); err != nil {
			t.Fatal(err)
		}
		pq := map[float64]float64{}
		for _, q := range m.GetSummary().GetQuantile() {
			pq[q.GetQuantile()] = q.GetValue()
		}
		for i, q := range qs {
			want := exact(q)
			rel := func(got float64) float64 { return math.Abs(got-want) / want }
			sum["tapes"] = append(sum["tapes"], rel(sk.Quantile(q)))
			sum["gometrics-expdecay"] = append(sum["gometrics-expdecay"], rel(gp[i]/1e9))
			sum["prometheus-summary"] = append(sum["prometheus-summary"], rel(pq[q]))
			if e := rel(sk.Quantile(q)); e > 0.01 {
				t.Errorf("tapes q%v: %.3f%% error", q, 100*e)
			}
		}
	}
	for _, lib := range []string{"tapes", "gometrics-expdecay", "prometheus-summary"} {
		e := sum[lib]
		var avg [3]float64
		for i, v := range e {
			avg[i%3] += v / seeds
		}
		t.Logf("%-20s mean |rel err| q50 %6.2f%%  q99 %6.2f%%  q999 %6.2f%%", lib, 100*avg[0], 100*avg[1], 100*avg[2])
	}
}
