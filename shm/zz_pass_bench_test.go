package shm

import "testing"

// BenchmarkPassOneEvent: one worker event, then one pass (what a lone
// trickling event costs the host besides its wake-up).
func BenchmarkPassOneEvent(b *testing.B) {
	h := newHost(b, Config{Slots: 64, RingRecords: 1024})
	c, err := Open(h.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctr := c.Counter("p.n")
	h.drain(false)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctr.Inc()
		if _, err := h.drain(false); err != nil {
			b.Fatal(err)
		}
	}
}
