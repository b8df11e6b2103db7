package plugin_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/tapes-go/tapes/hostabi/plugin"
	"github.com/tapes-go/tapes/internal/guesttest"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/host"
)

// A guest recording through ClientSink reaches a host registry through the
// shm file with the values it gets in-process.
func TestClientSinkEveryKind(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sink.shm")
	h, err := host.Create(path, host.Config{Slots: 2, RingRecords: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := shm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := plugin.New(ctx, plugin.Config{
		Wasm: cGuest(t, "cguest"), Name: "sink", Prefix: "plugins.s",
		Sink: plugin.ClientSink(c), CallTimeout: 0, NoInterrupt: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	r := h.Registry()
	const n = 3
	for i := 0; i < n; i++ {
		res, err := p.Call(ctx, "record_all")
		if err != nil || res[0] != 0 {
			t.Fatalf("record_all: %v %v", res, err)
		}
		if _, err := h.DrainOnce(); err != nil { // keeps the 1024-record ring from filling
			t.Fatal(err)
		}
	}
	// Gauges are a live worker's values: the host drops them when the
	// worker leaves, so read them before closing.
	guesttest.CheckEveryKind(t, r, "plugins.s.c.", n)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if c.Dropped() != 0 {
		t.Errorf("dropped %d", c.Dropped())
	}
}
