// Package push sends request bodies to an HTTP receiver from a goroutine of
// its own, so that whoever produces them (a reporter on the host's
// schedule) never waits for the network: Enqueue takes a lock for a slice
// append and returns. Behind it are a bounded queue that drops its oldest
// body when full (counted), retries with exponential backoff and jitter
// (Retry-After honoured; a 4xx other than 429 is final), a deadline per
// request, and counts of what was sent, failed, retried and dropped.
//
// The remote write and OTLP reporters share it: both send cumulative
// values, so a newer body supersedes an older one and dropping the oldest
// loses resolution, never totals; one sender sends in order, which remote
// write needs (a sample older than the newest of its series is rejected).
package push

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options' zero fields.
const (
	DefaultQueue       = 8
	DefaultTimeout     = 10 * time.Second
	DefaultMinBackoff  = 250 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
	DefaultMaxAttempts = 10
	// MaxRetryAfter bounds how long a receiver's Retry-After can hold the
	// queue: a receiver asking for an hour is treated as asking for this.
	MaxRetryAfter = 5 * time.Minute
)

// Counter receives counts; *registry.Counter is one.
type Counter interface{ Add(int64) }

// Metrics are where a Pusher reports what it does, besides Stats. Nil
// fields are left out.
type Metrics struct {
	Sent    Counter // bodies the receiver accepted (2xx)
	Failed  Counter // bodies given up: a final 4xx, or MaxAttempts used
	Retries Counter // attempts after the first
	Dropped Counter // bodies dropped unsent: the queue was full, or still held at Close
}

// Options configure a Pusher. Zero fields take the defaults above.
type Options struct {
	// Name names the pusher in log records and errors ("remote_write").
	Name string
	// URL receives every body by POST.
	URL string
	// Header is sent with every request (Content-Type and the like).
	Header http.Header
	// Queue is the most bodies waiting to be sent, besides the one being
	// sent; at the bound the oldest waiting body is dropped.
	Queue int
	// Timeout bounds one request, from dialling to the end of the
	// response; a receiver that never answers costs the sender this long
	// per attempt and nobody else anything.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a retry: it doubles
	// from MinBackoff per attempt up to MaxBackoff, then a random part of
	// up to half of it is taken off (jitter, so that a fleet that lost
	// its receiver does not come back in step).
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts is how often one body is tried before it is given up.
	MaxAttempts int
	// Client sends the requests; default: its own transport with
	// Timeout as dial and response-header timeout.
	Client *http.Client
	// Logger gets a record per failure (Warn) and recovery (Info);
	// default slog.Default().
	Logger *slog.Logger
	// Metrics, if set, receives the counts as they happen.
	Metrics Metrics
	// Check, if set, reads a 2xx response's body (at most 64 KiB): an
	// error counts the body as failed (not retried), as for a receiver
	// that accepted only part of it.
	Check func(body []byte) error
}

// Stats are a Pusher's counts so far.
type Stats struct {
	Sent, Failed, Retries, Dropped uint64
	// Queued is how many bodies wait, the one being sent included.
	Queued int
}

// Pusher sends bodies to one URL. Its methods may be called from any
// goroutine.
type Pusher struct {
	o   Options
	log *slog.Logger

	mu       sync.Mutex
	queue    [][]byte // oldest first
	inflight bool
	closed   bool
	wake     chan struct{} // 1-buffered: the queue got a body or closed

	stop     context.CancelFunc // aborts the request in flight and any wait
	stopCtx  context.Context
	done     chan struct{}
	failures int // consecutive failed attempts; sender goroutine only

	sent, failed, retries, dropped atomic.Uint64
}

// New starts a Pusher's sender goroutine; Close stops it.
func New(o Options) (*Pusher, error) {
	if o.URL == "" {
		return nil, errors.New("push: no URL")
	}
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.Name == "" {
		o.Name = "push"
	}
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			ResponseHeaderTimeout: o.Timeout,
			TLSHandshakeTimeout:   o.Timeout,
			MaxIdleConnsPerHost:   1,
			IdleConnTimeout:       90 * time.Second,
		}}
	}
	p := &Pusher{o: o, log: o.Logger, wake: make(chan struct{}, 1), done: make(chan struct{})}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.stopCtx, p.stop = context.WithCancel(context.Background())
	go p.run()
	return p, nil
}

// Enqueue queues body for sending and returns at once. When the queue is
// full its oldest waiting body is dropped (and counted). After Close the
// body is dropped. The Pusher owns body from now on.
func (p *Pusher) Enqueue(body []byte) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.drop(1)
		return
	}
	dropped := 0
	if len(p.queue) >= p.o.Queue {
		dropped = len(p.queue) - p.o.Queue + 1
		clear(p.queue[:dropped])
		p.queue = append(p.queue[:0], p.queue[dropped:]...)
	}
	p.queue = append(p.queue, body)
	p.mu.Unlock()
	p.drop(dropped)
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Pusher) drop(n int) {
	if n == 0 {
		return
	}
	p.dropped.Add(uint64(n))
	if p.o.Metrics.Dropped != nil {
		p.o.Metrics.Dropped.Add(int64(n))
	}
}

// Stats returns the counts so far.
func (p *Pusher) Stats() Stats {
	p.mu.Lock()
	q := len(p.queue)
	if p.inflight {
		q++
	}
	p.mu.Unlock()
	return Stats{Sent: p.sent.Load(), Failed: p.failed.Load(), Retries: p.retries.Load(),
		Dropped: p.dropped.Load(), Queued: q}
}

// Close stops taking bodies and sends what is queued until ctx ends, then
// aborts the request in flight and drops (counts) the rest. It returns
// once the sender goroutine has stopped; ctx's error if bodies were left.
func (p *Pusher) Close(ctx context.Context) error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	select {
	case <-p.done:
	case <-ctx.Done():
	}
	p.stop()
	<-p.done
	p.mu.Lock()
	left := len(p.queue)
	p.queue = nil
	p.mu.Unlock()
	p.drop(left)
	if left > 0 {
		return fmt.Errorf("%s: %d bodies unsent at close: %w", p.o.Name, left, ctx.Err())
	}
	return nil
}

// next takes the oldest body, waiting for one; ok is false once the
// Pusher is closed and empty, or stopped.
func (p *Pusher) next() (body []byte, ok bool) {
	for {
		p.mu.Lock()
		if len(p.queue) > 0 && p.stopCtx.Err() == nil {
			body = p.queue[0]
			p.queue[0] = nil
			p.queue = p.queue[1:]
			p.inflight = true
			p.mu.Unlock()
			return body, true
		}
		closed := p.closed
		p.mu.Unlock()
		if closed || p.stopCtx.Err() != nil {
			return nil, false
		}
		select {
		case <-p.wake:
		case <-p.stopCtx.Done():
		}
	}
}

func (p *Pusher) run() {
	defer close(p.done)
	for {
		body, ok := p.next()
		if !ok {
			return
		}
		p.deliver(body)
		p.mu.Lock()
		p.inflight = false
		p.mu.Unlock()
	}
}

// deliver sends body until it is accepted, refused for good, out of
// attempts, or the Pusher is stopped.
func (p *Pusher) deliver(body []byte) {
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			p.retries.Add(1)
			if p.o.Metrics.Retries != nil {
				p.o.Metrics.Retries.Add(1)
			}
		}
		retryAfter, err := p.send(body)
		if err == nil {
			p.sent.Add(1)
			if p.o.Metrics.Sent != nil {
				p.o.Metrics.Sent.Add(1)
			}
			if p.failures > 0 {
				p.log.Info("push recovered", "pusher", p.o.Name, "after_failed_attempts", p.failures)
				p.failures = 0
			}
			return
		}
		if p.stopCtx.Err() != nil {
			// Close gave up on it; Close counts what is left as dropped.
			p.drop(1)
			return
		}
		p.failures++
		var fe finalError
		final := errors.As(err, &fe)
		if final || attempt >= p.o.MaxAttempts {
			p.failed.Add(1)
			if p.o.Metrics.Failed != nil {
				p.o.Metrics.Failed.Add(1)
			}
			p.log.Warn("push failed; body given up", "pusher", p.o.Name, "err", err, "attempts", attempt)
			return
		}
		wait := max(p.backoff(attempt), min(retryAfter, MaxRetryAfter))
		// One warning per streak of failures: a dead receiver must not
		// flood the log.
		lvl := slog.LevelDebug
		if p.failures == 1 {
			lvl = slog.LevelWarn
		}
		p.log.Log(context.Background(), lvl, "push failed; retrying", "pusher", p.o.Name, "err", err, "attempt", attempt, "after", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.stopCtx.Done():
			t.Stop()
			p.drop(1)
			return
		}
	}
}

// backoff is the wait after the given failed attempt: MinBackoff doubled
// per attempt up to MaxBackoff, less a random part of up to half.
func (p *Pusher) backoff(attempt int) time.Duration {
	d := p.o.MinBackoff
	for i := 1; i < attempt && d < p.o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.o.MaxBackoff)
	return d - rand.N(d/2+1)
}

// finalError is a failure that retrying cannot fix.
type finalError struct{ error }

func (e finalError) Unwrap() error { return e.error }

// maxBody bounds what is read of a response.
const maxBody = 64 << 10

// send makes one attempt; retryAfter is the receiver's Retry-After, if any.
func (p *Pusher) send(body []byte) (retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(p.stopCtx, p.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.o.URL, bytes.NewReader(body))
	if err != nil {
		return 0, finalError{err}
	}
	for k, v := range p.o.Header {
		req.Header[k] = v
	}
	resp, err := p.o.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	msg, rerr := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		if rerr != nil {
			// Accepted: the status says so; a body cut short says
			// nothing about the data.
			return 0, nil
		}
		if p.o.Check != nil {
			if err := p.o.Check(msg); err != nil {
				return 0, finalError{err}
			}
		}
		return 0, nil
	case c == http.StatusTooManyRequests || c >= 500:
		return parseRetryAfter(resp.Header.Get("Retry-After")), statusError(resp, msg)
	default:
		return 0, finalError{statusError(resp, msg)}
	}
}

func statusError(resp *http.Response, msg []byte) error {
	const most = 256
	if len(msg) > most {
		msg = append(msg[:most:most], "..."...)
	}
	return fmt.Errorf("HTTP %s: %q", resp.Status, bytes.TrimSpace(msg))
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or
// unreadable.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
