package hostabi

import (
	"testing"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// BenchmarkApplyBatch is the host's share of a batched event: decoding one
// record and adding it to a counter.
func BenchmarkApplyBatch(b *testing.B) {
	r := registry.New()
	ids := []metric{{kind: wire.KindCounter, c: r.Counter("c")}, {kind: wire.KindHistogram, h: r.Histogram("h")}}
	for _, k := range []wire.Kind{wire.KindCounter, wire.KindHistogram} {
		b.Run(k.String(), func(b *testing.B) {
			const n = 1024
			buf := make([]byte, n*wire.RecordSize)
			id := uint32(0)
			if k == wire.KindHistogram {
				id = 1
			}
			for i := 0; i < n; i++ {
				rec := wire.IntRecord(id, k, 1)
				if wire.IsFloat(k) {
					rec = wire.FloatRecord(id, k, float64(i))
				}
				rec.Put(buf[i*wire.RecordSize:])
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if rej, _ := applyBatch(ids, buf); rej != 0 {
					b.Fatal(rej)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}
