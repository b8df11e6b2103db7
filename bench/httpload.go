package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// LoadConfig describes one run of the HTTP load generator: Requests GET
// requests for Path, spread over Concurrency keep-alive connections to Addr,
// the way `ab -k -n 30000 -c 10` drives a server.
//
// The generator speaks just enough HTTP/1.1 by hand (one request line, a
// Host header, a Content-Length body) so that its own cost per request stays
// far below net/http's client: on a 2-core machine the generator shares the
// CPU with the server, and a heavy client would hide the differences between
// server variants.
type LoadConfig struct {
	Addr        string        // host:port, loopback
	Path        string        // default "/"
	Requests    int           // total requests; must be positive
	Concurrency int           // connections, each with one request in flight; default 10
	Expect      []byte        // if not nil, a body that differs counts as an error
	Timeout     time.Duration // per request read/write deadline; default 10s
}

// LoadResult is what one run measured.
type LoadResult struct {
	// Latencies holds one entry per attempted request, indexed by the order
	// in which requests were claimed: the time from writing the request to
	// reading the last byte of the body. Failed requests hold 0.
	Latencies []time.Duration
	Elapsed   time.Duration // from the first connection attempt to the last response
	OK        int           // responses with status 200 and the expected body
	Errors    int           // everything else: connection errors, other statuses, other bodies
	FirstErr  error         // the first error seen, for the message
}

// RequestsPerSecond returns OK responses per second of Elapsed.
func (r LoadResult) RequestsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// Load runs cfg against a server and returns what it measured. It returns
// an error only for an invalid cfg; failed requests are counted in the
// result, and a connection that breaks is re-dialled so that one bad
// response cannot end the run early.
func Load(ctx context.Context, cfg LoadConfig) (LoadResult, error) {
	if cfg.Requests <= 0 {
		return LoadResult{}, fmt.Errorf("httpload: Requests = %d, must be positive", cfg.Requests)
	}
	l, err := NewLoader(cfg)
	if err != nil {
		return LoadResult{}, err
	}
	defer l.Close()
	return l.Run(ctx, cfg.Requests), nil
}

// Loader keeps its keep-alive connections open from one Run to the next,
// so that a benchmark can send its requests in chunks, interleaved with
// other servers' chunks, without reconnecting.
type Loader struct {
	cfg   LoadConfig
	req   []byte
	conns []*loadConn
}

// NewLoader checks cfg and fills its defaults; cfg.Requests is ignored.
func NewLoader(cfg LoadConfig) (*Loader, error) {
	if cfg.Requests < 0 {
		return nil, fmt.Errorf("httpload: Requests = %d, must not be negative", cfg.Requests)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 10
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	return &Loader{
		cfg:   cfg,
		req:   []byte("GET " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Addr + "\r\nUser-Agent: tapes-httpload\r\n\r\n"),
		conns: make([]*loadConn, cfg.Concurrency),
	}, nil
}

// Close closes the connections.
func (l *Loader) Close() {
	for i, c := range l.conns {
		if c != nil {
			c.conn.Close()
			l.conns[i] = nil
		}
	}
}

// Run sends n requests over the loader's connections and returns what it
// measured.
func (l *Loader) Run(ctx context.Context, n int) LoadResult {
	res := LoadResult{Latencies: make([]time.Duration, n)}
	var (
		next    atomic.Int64
		okN     atomic.Int64
		errN    atomic.Int64
		errOnce sync.Once
		wg      sync.WaitGroup
	)
	fail := func(err error) {
		errN.Add(1)
		errOnce.Do(func() { res.FirstErr = err })
	}
	start := time.Now()
	for w := range l.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := l.conns[w]
			defer func() { l.conns[w] = c }()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if c == nil {
					var err error
					if c, err = dialLoad(ctx, l.cfg.Addr); err != nil {
						fail(err)
						continue
					}
				}
				t0 := time.Now()
				if err := c.do(l.req, l.cfg.Expect, t0.Add(l.cfg.Timeout)); err != nil {
					fail(err)
					c.conn.Close()
					c = nil
					continue
				}
				res.Latencies[i] = time.Since(t0)
				okN.Add(1)
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.OK, res.Errors = int(okN.Load()), int(errN.Load())
	if missed := n - res.OK - res.Errors; missed > 0 {
		// The context ended: requests never sent count as failed.
		res.Errors += missed
		errOnce.Do(func() { res.FirstErr = ctx.Err() })
	}
	return res
}

type loadConn struct {
	conn net.Conn
	r    *bufio.Reader
	body []byte
}

func dialLoad(ctx context.Context, addr string) (*loadConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &loadConn{conn: conn, r: bufio.NewReaderSize(conn, 4096)}, nil
}

var errBadResponse = errors.New("httpload: malformed response")

// do sends one request and reads one response; an error leaves the
// connection unusable.
func (c *loadConn) do(req, expect []byte, deadline time.Time) error {
	if err := c.conn.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := c.conn.Write(req); err != nil {
		return err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return fmt.Errorf("%w: status line %q", errBadResponse, line)
	}
	status := string(line[9:12])
	length := -1
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return fmt.Errorf("%w: header %q", errBadResponse, h)
		}
		if bytes.EqualFold(bytes.TrimSpace(k), []byte("Content-Length")) {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil || length < 0 {
				return fmt.Errorf("%w: Content-Length %q", errBadResponse, v)
			}
		}
	}
	if length < 0 {
		return fmt.Errorf("%w: no Content-Length (status %s)", errBadResponse, status)
	}
	if cap(c.body) < length {
		c.body = make([]byte, length)
	}
	body := c.body[:length]
	if _, err := io.ReadFull(c.r, body); err != nil {
		return err
	}
	if status != "200" {
		return fmt.Errorf("httpload: status %s: %q", status, body)
	}
	if expect != nil && !bytes.Equal(body, expect) {
		return fmt.Errorf("httpload: body %q, want %q", body, expect)
	}
	return nil
}

// Quantiles returns the requested quantiles (0..1) of the non-zero
// latencies, by the nearest-rank rule: the smallest value with at least q of
// the values at or below it. It returns zeros if there are none.
func Quantiles(lat []time.Duration, qs ...float64) []time.Duration {
	s := make([]time.Duration, 0, len(lat))
	for _, d := range lat {
		if d > 0 {
			s = append(s, d)
		}
	}
	slices.Sort(s)
	out := make([]time.Duration, len(qs))
	if len(s) == 0 {
		return out
	}
	for i, q := range qs {
		rank := int(math.Ceil(q*float64(len(s)))) - 1
		out[i] = s[max(0, min(rank, len(s)-1))]
	}
	return out
}
