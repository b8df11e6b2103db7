// Package stream reports a registry as JSON lines: one document per report,
// each on its own line, on an io.Writer (standard output by default):
//
//	{"timestamp":"2026-11-25T10:00:00.123Z","stats":{"my":{"counter":{"value":3}}}}
//
// It is the StreamReporter of tapes, for log shippers and `jq`:
//
//	s := reporters.Start(ctx, &stream.Reporter{Registry: reg}, 10*time.Second)
package stream

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/jsonstats"
)

// Reporter writes one JSON line per Report. The zero value reports
// registry.Default to os.Stdout. Set the fields before the first Report.
type Reporter struct {
	// Registry is the registry to report; nil means registry.Default.
	Registry *registry.Registry
	// Writer receives the lines; nil means os.Stdout. Each line is passed
	// to one Write call, so lines from concurrent writers do not interleave
	// on writers that keep single writes whole.
	Writer io.Writer
	// Now gives the timestamp; nil means time.Now.
	Now func() time.Time

	mu  sync.Mutex
	buf []byte
}

// New returns a Reporter of r writing to w.
func New(r *registry.Registry, w io.Writer) *Reporter { return &Reporter{Registry: r, Writer: w} }

// Report writes one line with the current time (UTC, RFC 3339 with
// nanoseconds) and the registry's stats tree. Non-finite gauge values are
// written as null.
func (s *Reporter) Report(ctx context.Context) error {
	r := s.Registry
	if r == nil {
		r = registry.Default
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	stats, err := jsonstats.Marshal(r.Stats())
	if err != nil {
		return fmt.Errorf("stream: encoding stats: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := append(s.buf[:0], `{"timestamp":"`...)
	b = now().UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","stats":`...)
	b = append(append(b, stats...), "}\n"...)
	s.buf = b
	w := s.Writer
	if w == nil {
		w = os.Stdout
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	return nil
}
