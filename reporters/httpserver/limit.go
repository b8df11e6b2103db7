package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/rendercache"
)

// connLimit is the cap for a MaxConns of want under the process's fd limit:
// a quarter of the descriptors (at least 64) stay for the rest of the
// process (shm file, /proc reads, plugins, logs), whatever clients do.
// 0: no cap.
func connLimit(want int) int {
	want = orDefault(want, DefaultMaxConns)
	fds, ok := fdLimit()
	if !ok {
		return want
	}
	avail := max(fds-max(64, fds/4), 1)
	if want == 0 || want > avail {
		return avail
	}
	return want
}

// limitRecheck is how often the cap follows a changed fd limit (prlimit(1)
// on a running process, or a supervisor's setrlimit).
const limitRecheck = time.Second

// Where a connection is, as far as the cap is concerned. The order is the
// order of eviction: a connection with no request in progress goes first,
// then one still reading its request headers, then one inside a request
// for longer than busyGrace.
const (
	phaseWaiting int32 = iota // accepted or keep-alive, no request byte yet
	phaseReading              // request bytes read, headers not complete
	phaseServing              // inside a handler
	phaseClosed
)

// busyGrace protects a request that just began from eviction: at the cap,
// a connection inside a request is closed only when it has been there this
// long (a slow reader of a response), else the new connection is refused.
const busyGrace = time.Second

// limitListener caps the open connections of a server and evicts at the
// cap instead of refusing: refusing would let whoever holds the
// connections first (idle keep-alives, a slowloris) lock scrapers out for
// as long as they like.
type limitListener struct {
	net.Listener
	want    int          // Options.MaxConns
	max     atomic.Int64 // the cap in force: connLimit(want); 0: none
	checked time.Time    // when max was computed; Accept's goroutine only
	m       *selfMetrics
	log     *slog.Logger

	mu    sync.Mutex
	conns map[*conn]struct{}

	lastWarn atomic.Int64 // unix nanos of the last "at the cap" warning
}

func newLimitListener(ln net.Listener, want int, m *selfMetrics, log *slog.Logger) *limitListener {
	l := &limitListener{Listener: ln, want: want, m: m, log: log, conns: map[*conn]struct{}{}}
	l.limit(time.Now())
	return l
}

// limit returns the cap in force, following the fd limit.
func (l *limitListener) limit(now time.Time) int {
	if now.Sub(l.checked) >= limitRecheck {
		l.checked = now
		n := connLimit(l.want)
		if int64(n) != l.max.Load() {
			l.max.Store(int64(n))
			l.m.limit.Set(float64(n))
		}
	}
	return int(l.max.Load())
}

type conn struct {
	net.Conn
	l         *limitListener
	phase     atomic.Int32
	since     atomic.Int64 // unix nanos when phase was entered
	abortRead atomic.Bool  // the last read deadline is net/http's "abort" (in the past)
	served    atomic.Bool  // it has answered a request: waiting means keep-alive idle
	closeOnce sync.Once
}

func (c *conn) enter(p int32) {
	c.since.Store(time.Now().UnixNano())
	c.phase.Store(p)
}

// Accept returns the next connection, making room at the cap. It also
// handles running out of file descriptors (EMFILE/ENFILE, whoever used them):
// it closes the longest-waiting connection and tries again, where net/http
// would retry with nothing freed.
func (l *limitListener) Accept() (net.Conn, error) {
	backoff := time.Millisecond
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				l.m.fdExhausted.Inc()
				l.warn("out of file descriptors: closing the longest-waiting connection")
				if !l.evict(time.Now()) {
					time.Sleep(backoff)
					backoff = min(2*backoff, 100*time.Millisecond)
				}
				continue
			}
			return nil, err
		}
		backoff = time.Millisecond
		if testAccepted != nil {
			testAccepted(nc)
		}
		c := &conn{Conn: nc, l: l}
		c.enter(phaseWaiting)
		max := l.limit(time.Now())
		l.mu.Lock()
		for max > 0 && len(l.conns) >= max {
			l.mu.Unlock()
			if !l.evict(time.Now()) {
				l.m.refused.Inc()
				l.warn("connection cap reached with every connection inside a request: refusing")
				nc.Close()
				c = nil
				l.mu.Lock()
				break
			}
			l.warn("connection cap reached: closing the longest-waiting connection")
			l.mu.Lock()
		}
		if c == nil {
			l.mu.Unlock()
			continue
		}
		l.conns[c] = struct{}{}
		l.m.open.Set(float64(len(l.conns)))
		l.mu.Unlock()
		l.m.accepted.Inc()
		return c, nil
	}
}

// testAccepted, when set by a test, sees every accepted connection (to
// shrink its socket buffers).
var testAccepted func(net.Conn)

// evict closes the connection that is first in eviction order and reports
// whether there was one.
func (l *limitListener) evict(now time.Time) bool {
	l.mu.Lock()
	var victim *conn
	vp, vs := int32(phaseClosed), int64(0)
	for c := range l.conns {
		p, s := c.phase.Load(), c.since.Load()
		if p == phaseServing && now.UnixNano()-s < int64(busyGrace) {
			continue
		}
		if p < vp || p == vp && s < vs {
			victim, vp, vs = c, p, s
		}
	}
	if victim != nil {
		l.removeLocked(victim)
	}
	l.mu.Unlock()
	if victim == nil {
		return false
	}
	l.m.evicted.Inc()
	victim.Close()
	return true
}

func (l *limitListener) removeLocked(c *conn) {
	if _, ok := l.conns[c]; ok {
		delete(l.conns, c)
		l.m.open.Set(float64(len(l.conns)))
	}
}

// warn logs at most once a minute: a flood must not become a log flood.
func (l *limitListener) warn(msg string) {
	now := time.Now().UnixNano()
	last := l.lastWarn.Load()
	if now-last < int64(time.Minute) || !l.lastWarn.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn("httpserver: "+msg+" (logged at most once a minute; see the connection metrics)",
		"addr", l.Addr().String(), "max_conns", l.max.Load())
}

func (c *conn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		c.phase.Store(phaseClosed)
		c.l.mu.Lock()
		c.l.removeLocked(c)
		c.l.mu.Unlock()
		err = c.Conn.Close()
	})
	return err
}

func (c *conn) SetReadDeadline(t time.Time) error {
	// net/http ends its background read by setting a deadline in the
	// past; the timeout that follows is not the client's doing.
	c.abortRead.Store(!t.IsZero() && t.Before(time.Now()))
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if ne, ok := err.(net.Error); ok && ne.Timeout() && !c.abortRead.Load() {
		switch c.phase.Load() {
		case phaseWaiting:
			if c.served.Load() {
				c.l.m.idleTimeouts.Inc()
			} else {
				c.l.m.headerTimeouts.Inc()
			}
		case phaseReading:
			c.l.m.headerTimeouts.Inc()
		}
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.l.m.writeTimeouts.Inc()
	}
	return n, err
}

// connState follows net/http's view of each connection.
func (l *limitListener) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	switch st {
	case http.StateActive:
		c.enter(phaseReading)
	case http.StateIdle:
		c.served.Store(true)
		c.enter(phaseWaiting)
	case http.StateClosed:
		c.Close()
	case http.StateHijacked:
		// The handler owns it now: stop counting it, never close it.
		c.phase.Store(phaseClosed)
		l.mu.Lock()
		l.removeLocked(c)
		l.mu.Unlock()
	}
}

type connKey struct{}

func (l *limitListener) connContext(ctx context.Context, nc net.Conn) context.Context {
	if c, ok := nc.(*conn); ok {
		return context.WithValue(ctx, connKey{}, c)
	}
	return ctx
}

// track marks the request's connection as inside a request while h runs,
// and has its body written through gate (see rendercache.Gate).
func (l *limitListener) track(h http.Handler, gate *rendercache.Gate, writeTimeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var deadline time.Time
		if writeTimeout > 0 {
			// net/http set this deadline just before calling us.
			deadline = time.Now().Add(writeTimeout)
		}
		req = req.WithContext(rendercache.WithGate(req.Context(), gate, deadline))
		c, _ := req.Context().Value(connKey{}).(*conn)
		if c == nil || c.phase.Load() == phaseServing {
			h.ServeHTTP(w, req)
			return
		}
		c.enter(phaseServing)
		defer c.enter(phaseReading)
		h.ServeHTTP(w, req)
	})
}

// selfMetrics are the server's own numbers, in the served registry when
// Options.MetricsPrefix is set, else in a private one nobody reads.
type selfMetrics struct {
	r                                           *registry.Registry
	prefix                                      string
	accepted, evicted, refused, fdExhausted     *registry.Counter
	headerTimeouts, idleTimeouts, writeTimeouts *registry.Counter
	open, limit                                 *registry.Gauge
	endpoints                                   map[string]*endpointMetrics
}

type endpointMetrics struct {
	requests *registry.Counter
	renders  *registry.Timer
}

func newSelfMetrics(r *registry.Registry, prefix string) (*selfMetrics, error) {
	if prefix == "" {
		r, prefix = registry.New(), "httpserver"
	}
	m := &selfMetrics{r: r, prefix: prefix, endpoints: map[string]*endpointMetrics{}}
	var err error
	counter := func(name string) *registry.Counter {
		x, e := r.GetOrCreate(registry.KindCounter, prefix+"."+name)
		if e != nil {
			err = errors.Join(err, e)
			return new(registry.Counter)
		}
		return x.(*registry.Counter)
	}
	gauge := func(name string) *registry.Gauge {
		x, e := r.GetOrCreate(registry.KindGauge, prefix+"."+name)
		if e != nil {
			err = errors.Join(err, e)
			return registry.NewFuncGauge(nil)
		}
		return x.(*registry.Gauge)
	}
	m.accepted = counter("connections.accepted")
	m.evicted = counter("connections.evicted")
	m.refused = counter("connections.refused")
	m.fdExhausted = counter("connections.fd_exhausted")
	m.open = gauge("connections.open")
	m.limit = gauge("connections.limit")
	m.headerTimeouts = counter("timeouts.header")
	m.idleTimeouts = counter("timeouts.idle")
	m.writeTimeouts = counter("timeouts.write")
	for _, ep := range []string{"stats", "metrics"} {
		e := &endpointMetrics{requests: counter(ep + ".requests")}
		x, er := r.GetOrCreate(registry.KindTimer, prefix+"."+ep+".renders")
		if er != nil {
			err = errors.Join(err, er)
			e.renders = registry.New().Timer("x")
		} else {
			e.renders = x.(*registry.Timer)
		}
		m.endpoints[ep] = e
	}
	if err != nil {
		return nil, fmt.Errorf("httpserver: own metrics under %q: %w", prefix, err)
	}
	return m, nil
}

func (m *selfMetrics) endpoint(name string) *endpointMetrics { return m.endpoints[name] }

func (e *endpointMetrics) onRender(took time.Duration, _ int, _ error) { e.renders.Update(took) }

func (e *endpointMetrics) count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		e.requests.Inc()
		h.ServeHTTP(w, req)
	})
}
