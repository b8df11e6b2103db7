package main

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
)

// A plugin process runs a hostile guest, so its replies are input: an
// error kind that is not exactly one of ours ("rap" is a substring of
// "trap") is a protocol error, and counting it must not dereference a
// counter that does not exist.
func TestPluginReplyKindIsChecked(t *testing.T) {
	for _, kind := range []string{"rap", "p t", "", "trap timeout", "nonsense"} {
		c := &child{replies: make(chan workerReply, 1)}
		c.replies <- workerReply{Op: "collect", OK: false, Kind: kind, Err: "boom"}
		_, err := c.await(context.Background(), time.Second)
		var ce *callError
		if !errors.As(err, &ce) || ce.kind != errProtocol {
			t.Errorf("kind %q: error %v, want a %s error", kind, err, errProtocol)
		}
	}
	r := registry.New()
	s := &pluginSup{m: newPluginMetrics(r, "p"), log: slog.New(slog.DiscardHandler)}
	var backoff time.Duration
	s.failed(context.Background(), &callError{"rap", errors.New("boom")}, &backoff)
	if n := s.m.errors[errProtocol].Value(); n != 1 {
		t.Errorf("errors.protocol = %d after an unknown kind, want 1", n)
	}
}
