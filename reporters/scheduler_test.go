package reporters

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// counting is a Reporter that records how it was called.
type counting struct {
	calls    atomic.Int64
	inFlight atomic.Int64
	maxIn    atomic.Int64
	hold     time.Duration
	fail     func(n int64) error
	reported chan int64 // receives the call number after each report, if not nil
}

func (c *counting) Report(ctx context.Context) error {
	in := c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	for {
		m := c.maxIn.Load()
		if in <= m || c.maxIn.CompareAndSwap(m, in) {
			break
		}
	}
	if c.hold > 0 {
		time.Sleep(c.hold)
	}
	n := c.calls.Add(1)
	var err error
	if c.fail != nil {
		err = c.fail(n)
	}
	if c.reported != nil {
		c.reported <- n
	}
	return err
}

func quietLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, nil))
}

func TestReportsAtStartThenOnEveryTick(t *testing.T) {
	ticks := make(chan time.Time)
	rep := &counting{reported: make(chan int64, 10)}
	var logs bytes.Buffer
	s := Start(context.Background(), rep, time.Hour, withTicks(ticks), WithLogger(quietLogger(&logs)))
	defer s.Stop()

	if n := <-rep.reported; n != 1 {
		t.Fatalf("first report is call %d, want 1", n)
	}
	for want := int64(2); want <= 4; want++ {
		ticks <- time.Now()
		if n := <-rep.reported; n != want {
			t.Fatalf("report after tick is call %d, want %d", n, want)
		}
	}
	s.Stop()
	if got := s.Reports(); got != 4 {
		t.Fatalf("Reports() = %d, want 4", got)
	}
	if s.Errors() != 0 {
		t.Fatalf("Errors() = %d, want 0", s.Errors())
	}
}

func TestRealIntervalReportsRepeatedly(t *testing.T) {
	rep := &counting{reported: make(chan int64, 100)}
	s := Start(context.Background(), rep, time.Millisecond)
	for i := 0; i < 5; i++ {
		select {
		case <-rep.reported:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d reports within 10s at a 1ms interval", i)
		}
	}
	s.Stop()
}

func TestStopWaitsForRunningReport(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	var finished atomic.Bool
	rep := ReporterFunc(func(ctx context.Context) error {
		close(started)
		<-release
		finished.Store(true)
		return nil
	})
	s := Start(context.Background(), rep, time.Hour)
	<-started

	stopped := make(chan struct{})
	go func() {
		s.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("Stop returned while a report was still running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-stopped
	if !finished.Load() {
		t.Fatal("Stop returned before the running report finished")
	}
	s.Stop() // idempotent
}

func TestReportsNeverOverlap(t *testing.T) {
	// Ticks every millisecond against reports taking 3 ms: the ticker must
	// drop ticks instead of starting a second report.
	rep := &counting{hold: 3 * time.Millisecond, reported: make(chan int64, 1000)}
	s := Start(context.Background(), rep, time.Millisecond)
	for i := 0; i < 20; i++ {
		<-rep.reported
	}
	// StopAndFlush racing with the loop must not overlap either.
	if err := s.StopAndFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := rep.maxIn.Load(); m != 1 {
		t.Fatalf("%d reports ran at once", m)
	}
}

func TestContextCancellationStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	rep := &counting{reported: make(chan int64, 10)}
	s := Start(ctx, rep, time.Hour)
	<-rep.reported
	cancel()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("scheduler still running 10s after its context was cancelled")
	}
	s.Stop() // still fine after cancellation
}

func TestStopAndFlushReportsOnceMore(t *testing.T) {
	ticks := make(chan time.Time)
	rep := &counting{reported: make(chan int64, 10)}
	s := Start(context.Background(), rep, time.Hour, withTicks(ticks))
	<-rep.reported
	if err := s.StopAndFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := rep.calls.Load(); n != 2 {
		t.Fatalf("%d reports after StopAndFlush, want 2 (start + final)", n)
	}
	// The schedule is over: ticks are no longer taken.
	select {
	case ticks <- time.Now():
		t.Fatal("a tick was consumed after StopAndFlush")
	case <-time.After(20 * time.Millisecond):
	}
}

func TestErrorsAreLoggedCountedAndRecovered(t *testing.T) {
	sinkDown := errors.New("sink unreachable")
	ticks := make(chan time.Time)
	rep := &counting{
		reported: make(chan int64, 10),
		fail: func(n int64) error {
			if n >= 2 && n <= 3 {
				return sinkDown
			}
			return nil
		},
	}
	var mu sync.Mutex
	var logs bytes.Buffer
	l := slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &logs}, nil))
	s := Start(context.Background(), rep, time.Hour, withTicks(ticks), WithLogger(l), WithName("test-sink"))
	<-rep.reported
	for i := 0; i < 3; i++ {
		ticks <- time.Now()
		<-rep.reported
	}
	s.Stop()
	if s.Errors() != 2 || s.Reports() != 4 {
		t.Fatalf("Errors() = %d, Reports() = %d; want 2 and 4", s.Errors(), s.Reports())
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if strings.Count(out, "reporter failed") != 2 || !strings.Contains(out, "sink unreachable") ||
		!strings.Contains(out, "reporter=test-sink") {
		t.Fatalf("failures not logged as expected:\n%s", out)
	}
	if !strings.Contains(out, "reporter recovered") || !strings.Contains(out, "after_failures=2") {
		t.Fatalf("recovery not logged:\n%s", out)
	}
}

func TestPanickingReporterIsAFailureNotACrash(t *testing.T) {
	var logs bytes.Buffer
	ticks := make(chan time.Time)
	var calls atomic.Int64
	done := make(chan struct{}, 10)
	rep := ReporterFunc(func(ctx context.Context) error {
		defer func() { done <- struct{}{} }()
		if calls.Add(1) == 1 {
			panic("broken sink")
		}
		return nil
	})
	s := Start(context.Background(), rep, time.Hour, withTicks(ticks), WithLogger(quietLogger(&logs)))
	<-done
	ticks <- time.Now()
	<-done
	s.Stop()
	if s.Errors() != 1 || calls.Load() != 2 {
		t.Fatalf("Errors() = %d after a panic, calls = %d; want 1 and 2", s.Errors(), calls.Load())
	}
}

func TestEveryReportHasADeadline(t *testing.T) {
	got := make(chan time.Duration, 1)
	rep := ReporterFunc(func(ctx context.Context) error {
		dl, ok := ctx.Deadline()
		if !ok {
			got <- -1
			return nil
		}
		got <- time.Until(dl)
		<-ctx.Done() // a hung sink is cut off by the timeout
		return ctx.Err()
	})
	var logs bytes.Buffer
	s := Start(context.Background(), rep, time.Hour, WithTimeout(20*time.Millisecond), WithLogger(quietLogger(&logs)))
	d := <-got
	if d < 0 || d > 20*time.Millisecond {
		t.Fatalf("report deadline %v away, want within the 20ms timeout", d)
	}
	s.Stop()
	if s.Errors() != 1 {
		t.Fatalf("a timed-out report was not counted as an error")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestAlreadyCancelledContextReportsNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep := &counting{}
	s := Start(ctx, rep, time.Millisecond)
	<-s.Done()
	if n := rep.calls.Load(); n != 0 {
		t.Fatalf("%d reports with a cancelled context", n)
	}
}
