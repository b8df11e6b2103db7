// Package reporters runs push reporters on a schedule. The outputs live in
// the sub-packages:
//
//   - httpjson: an http.Handler serving the registry's stats tree as JSON.
//   - prometheus: the Prometheus text format, as a writer and an http.Handler.
//   - httpserver: a standalone server with both, for programs without an HTTP stack.
//   - stream: one JSON document per line on an io.Writer (a Reporter).
//   - statsd: StatsD over UDP (a Reporter).
//
// A push reporter is anything with a Report method; Start runs one in its
// own goroutine:
//
//	s := reporters.Start(ctx, statsdReporter, 10*time.Second)
//	defer s.StopAndFlush(context.Background()) // report one last time
//
// Recording code never touches a reporter, so a slow or dead sink costs the
// application nothing but the scheduler goroutine's time.
package reporters

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Reporter sends the current values of metrics somewhere. Report must
// respect ctx where it can: the scheduler gives every call a deadline (see
// WithTimeout). Report is never called concurrently by one Scheduler.
type Reporter interface {
	Report(ctx context.Context) error
}

// ReporterFunc adapts a function to Reporter.
type ReporterFunc func(ctx context.Context) error

// Report calls f(ctx).
func (f ReporterFunc) Report(ctx context.Context) error { return f(ctx) }

// Option configures a Scheduler.
type Option func(*config)

type config struct {
	logger  *slog.Logger
	timeout time.Duration
	name    string
	ticks   <-chan time.Time // injected by tests instead of a ticker
}

// WithLogger sets where failed reports are logged; default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithTimeout bounds each report: its context is cancelled after d.
// Default: the interval, so a hung sink delays at most one tick.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// withTicks replaces the ticker, so tests decide when ticks happen.
func withTicks(c <-chan time.Time) Option { return func(cfg *config) { cfg.ticks = c } }

// WithName sets the reporter name used in log records; default the
// reporter's Go type.
func WithName(name string) Option { return func(c *config) { c.name = name } }

// Scheduler runs one Reporter: once at Start, then every interval, never two
// reports at a time. A tick that comes while a report is still running is
// dropped rather than queued, so a slow sink makes reports rarer, not late
// and bunched. Failed reports (errors and panics) are logged and counted and
// the schedule goes on; the next report that succeeds logs the recovery.
type Scheduler struct {
	rep Reporter
	cfg config

	mu     sync.Mutex // serializes reports between the loop and StopAndFlush
	cancel context.CancelFunc
	done   chan struct{}

	reports  atomic.Uint64
	errors   atomic.Uint64
	failures int // consecutive failures; guarded by mu
}

// Start runs rep once now and then every interval in a new goroutine, until
// ctx is cancelled or Stop is called. interval must be positive.
func Start(ctx context.Context, rep Reporter, interval time.Duration, opts ...Option) *Scheduler {
	if interval <= 0 {
		panic(fmt.Sprintf("reporters.Start: interval must be positive, got %v", interval))
	}
	s := &Scheduler{rep: rep, cfg: config{timeout: interval}, done: make(chan struct{})}
	for _, o := range opts {
		o(&s.cfg)
	}
	if s.cfg.logger == nil {
		s.cfg.logger = slog.Default()
	}
	if s.cfg.name == "" {
		s.cfg.name = fmt.Sprintf("%T", rep)
	}
	ctx, s.cancel = context.WithCancel(ctx)
	ticks := s.cfg.ticks
	var tk *time.Ticker
	if ticks == nil {
		tk = time.NewTicker(interval)
		ticks = tk.C
	}
	go func() {
		defer close(s.done)
		if tk != nil {
			defer tk.Stop()
		}
		if ctx.Err() == nil {
			s.report(ctx)
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticks:
				// Stop may have raced with the tick; prefer stopping.
				if ctx.Err() != nil {
					return
				}
				s.report(ctx)
			}
		}
	}()
	return s
}

// report runs one report with the configured deadline and accounts for it.
func (s *Scheduler) report(parent context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(parent, s.cfg.timeout)
	defer cancel()
	err := s.call(ctx)
	s.reports.Add(1)
	if err != nil {
		s.errors.Add(1)
		s.failures++
		s.cfg.logger.Warn("reporter failed", "reporter", s.cfg.name, "err", err, "consecutive_failures", s.failures)
		return err
	}
	if s.failures > 0 {
		s.cfg.logger.Info("reporter recovered", "reporter", s.cfg.name, "after_failures", s.failures)
		s.failures = 0
	}
	return nil
}

// call turns a panicking reporter into a failed report: a broken sink must
// not take the host down.
func (s *Scheduler) call(ctx context.Context) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("reporter panicked: %v", p)
		}
	}()
	return s.rep.Report(ctx)
}

// Stop stops the schedule and returns once no report is running. It does not
// report again; use StopAndFlush for that. Calling it more than once, or
// after ctx was cancelled, is fine.
func (s *Scheduler) Stop() {
	s.cancel()
	<-s.done
}

// StopAndFlush stops the schedule like Stop, then runs the reporter one last
// time with ctx (give it a deadline) so that what was recorded since the
// previous report is not lost at shutdown. It returns that report's error,
// which is also logged and counted like any other.
func (s *Scheduler) StopAndFlush(ctx context.Context) error {
	s.Stop()
	return s.report(ctx)
}

// Done is closed when the schedule has ended (Stop, or ctx cancelled) and no
// scheduled report is running.
func (s *Scheduler) Done() <-chan struct{} { return s.done }

// Reports returns the number of reports run so far, failed ones included.
func (s *Scheduler) Reports() uint64 { return s.reports.Load() }

// Errors returns the number of failed reports so far.
func (s *Scheduler) Errors() uint64 { return s.errors.Load() }
