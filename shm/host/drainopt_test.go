package host

import (
	"context"
	"time"
)

// Test-only tuning of a running host: the settings are Config's, fixed at
// creation, but a test may shorten or stretch them before Drain starts.
type drainOpt func(*Host)

func WithMaxIdleSleep(d time.Duration) drainOpt     { return func(h *Host) { h.maxIdle = d } }
func WithLivenessInterval(d time.Duration) drainOpt { return func(h *Host) { h.liveEvery = d } }

func testDrain(h *Host, ctx context.Context, opts ...drainOpt) error {
	h.mu.Lock()
	for _, o := range opts {
		o(h)
	}
	h.mu.Unlock()
	return h.Drain(ctx)
}
