package expo

import (
	"fmt"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
)

// BenchmarkCollect10kTimers: what a scrape of 10k timers spends in Collect,
// with (native, for protobuf and push) and without (text summaries) the
// bucket export, on a Collector kept from scrape to scrape.
func BenchmarkCollect10kTimers(b *testing.B) {
	r := registry.New()
	for i := range 10000 {
		t := r.Timer(fmt.Sprintf("svc.t%05d", i))
		for j := 1; j <= 200; j++ {
			t.Update(time.Duration(j*j) * time.Microsecond)
		}
	}
	for _, native := range []bool{false, true} {
		b.Run(fmt.Sprintf("native=%v", native), func(b *testing.B) {
			var c Collector
			for b.Loop() {
				if _, err := c.Collect(r, Options{SkipNative: !native}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
