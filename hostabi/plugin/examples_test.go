package plugin_test

import (
	"context"
	"testing"

	pluginc "github.com/tapes-go/tapes/examples/plugin-c"
	"github.com/tapes-go/tapes/hostabi/plugin"
	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tapes-go/tapes/registry"
)

// The example plugins that tapes-host loads with -plugin record every kind.
func TestExamplePlugins(t *testing.T) {
	guests := map[string]func(t *testing.T) []byte{
		"go": func(t *testing.T) []byte { return goGuest(t, "examples/plugin-go") },
		"c": func(t *testing.T) []byte {
			return builds.Bytes(t, "example-c.wasm", testenv.WasiC(testenv.WasiClang(t), "examples/plugin-c/src/plugin.c", true))
		},
	}
	guests["c-embedded"] = func(*testing.T) []byte { return pluginc.Wasm }
	for lang, build := range guests {
		t.Run(lang, func(t *testing.T) {
			r := registry.New()
			p := newPlugin(t, plugin.Config{
				Name: "example", Wasm: build(t), Registry: r, Prefix: "plugins.example", PoolSize: 2, CallTimeout: 10e9,
			})
			ctx := context.Background()
			for _, size := range []uint64{100, 200, 300} {
				if _, err := p.Call(ctx, "handle", size); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Collect(ctx); err != nil {
				t.Fatal(err)
			}
			// The collect handles ten requests with sizes 1..1000 from the
			// sequence seed = seed*1103515245 + 12345, size = seed>>16 % 1000 + 1.
			want := int64(600)
			seed := uint32(1)
			for i := 0; i < 10; i++ {
				seed = seed*1103515245 + 12345
				want += int64(int32(seed>>16)%1000 + 1)
			}
			pre := "plugins.example."
			if v := r.Counter(pre + "requests").Value(); v != 13 {
				t.Errorf("requests = %d, want 13", v)
			}
			if v := r.Counter(pre + "collections").Value(); v != 1 {
				t.Errorf("collections = %d", v)
			}
			if v := r.Meter(pre + "bytes_in").Count(); v != want {
				t.Errorf("bytes_in = %d, want %d", v, want)
			}
			if h := r.Histogram(pre + "payload_size"); h.Count() != 13 || h.Sum() != float64(want) {
				t.Errorf("payload_size count %d sum %v, want 13 and %d", h.Count(), h.Sum(), want)
			}
			if v := r.Timer(pre + "latency").Count(); v != 13 {
				t.Errorf("latency count = %d, want 13", v)
			}
			if v := r.Gauge(pre+"queue_depth", nil).Value(); v != 0 {
				t.Errorf("queue_depth = %v after collect", v)
			}
			if v := r.Gauge(pre+"handled", nil).Value(); v < 1 || v > 13 {
				t.Errorf("handled = %v (per instance, 1 to 13)", v)
			}
			if r.Len() != 7 {
				t.Errorf("%d metrics, want 7", r.Len())
			}
			if st := p.Stats(); st.Errors != 0 || st.Rejected != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}
