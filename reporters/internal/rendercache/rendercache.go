// Package rendercache shares one rendered body between concurrent HTTP
// scrapes, so that the cost of rendering a registry does not grow with the
// number of scrapers: N scrapes arriving together cost one render, and with
// a MaxAge of d at most one render runs per d whatever the request rate.
package rendercache

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Body is one rendered response, shared read-only by every scrape it
// answers. Nothing may modify Bytes.
type Body struct {
	Bytes []byte
	Err   error
	Start time.Time // when the render began reading the registry

	gzOnce sync.Once
	gz     []byte
}

// Gzip returns Bytes gzip-compressed, compressing once per body however
// many requests ask: a scraper that accepts gzip (Prometheus, Go's client)
// then costs the host a fraction of the bytes to write.
func (b *Body) Gzip() []byte {
	b.gzOnce.Do(func() {
		var buf bytes.Buffer
		buf.Grow(len(b.Bytes)/4 + 64)
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		zw.Write(b.Bytes)
		zw.Close()
		b.gz = buf.Bytes()
	})
	return b.gz
}

// AcceptsGzip reports whether an Accept-Encoding header value allows gzip
// (a "gzip" or "*" coding whose q is not 0).
func AcceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		coding = strings.TrimSpace(coding)
		if !strings.EqualFold(coding, "gzip") && coding != "*" {
			continue
		}
		q := strings.TrimSpace(params)
		if v, ok := strings.CutPrefix(q, "q="); ok {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil || f == 0 {
				continue
			}
		}
		return true
	}
	return false
}

// Serve writes b's bytes (gzip-compressed when req accepts it) with
// contentType, or a 500 carrying what when b.Err is set.
func Serve(w http.ResponseWriter, req *http.Request, b *Body, contentType, what string) {
	if b.Err != nil {
		http.Error(w, what+b.Err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Add("Vary", "Accept-Encoding")
	body := b.Bytes
	if AcceptsGzip(req.Header.Get("Accept-Encoding")) {
		body = b.Gzip()
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if req.Method == http.MethodHead {
		return
	}
	g, _ := req.Context().Value(gateKey{}).(*gateCtx)
	if g == nil {
		w.Write(body)
		return
	}
	g.write(w, req, body)
}

// Gate bounds how many response bodies are being copied into sockets at
// once. Without it a flood of fast scrapers keeps hundreds of goroutines
// runnable and as many threads in write(2) (the runtime hands a P on when
// a syscall runs long), and a goroutine that must run promptly (the shm
// drain loop) waits behind all of them. Under the gate, waiting writers are
// parked, not runnable.
//
// A token is held for one chunk at a time, under a write deadline of
// ChunkTimeout: a client that does not take a chunk in that time (a full
// socket buffer and a reader slower than chunk/ChunkTimeout) is dropped
// rather than allowed to hold the token.
type Gate struct{ tokens chan struct{} }

const (
	// Chunk is how much of a body is written per token.
	Chunk = 64 << 10
	// ChunkTimeout is how long a client may take to accept one chunk.
	ChunkTimeout = time.Second
)

// NewGate returns a gate letting n body writes run at once.
func NewGate(n int) *Gate { return &Gate{tokens: make(chan struct{}, max(n, 1))} }

type gateKey struct{}

type gateCtx struct {
	g        *Gate
	deadline time.Time // the request's own write deadline; zero if none
}

// WithGate makes Serve write through g for requests with ctx. deadline is
// the write deadline the server set for the request (zero if none): chunk
// deadlines never extend it.
func WithGate(ctx context.Context, g *Gate, deadline time.Time) context.Context {
	return context.WithValue(ctx, gateKey{}, &gateCtx{g, deadline})
}

func (g *gateCtx) write(w http.ResponseWriter, req *http.Request, body []byte) {
	rc := http.NewResponseController(w)
	defer rc.SetWriteDeadline(g.deadline)
	for off := 0; off < len(body); off += Chunk {
		select {
		case g.g.tokens <- struct{}{}:
		case <-req.Context().Done():
			return
		}
		d := time.Now().Add(ChunkTimeout)
		if !g.deadline.IsZero() && g.deadline.Before(d) {
			d = g.deadline
		}
		rc.SetWriteDeadline(d)
		_, err := w.Write(body[off:min(off+Chunk, len(body))])
		<-g.g.tokens
		if err != nil {
			return
		}
	}
}

// Render appends a fresh rendering to dst (an empty buffer with room for the
// previous body's size) and returns it.
type Render func(dst []byte) ([]byte, error)

// Cache holds the latest Body of one endpoint. The zero value is not
// usable; call New.
type Cache struct {
	render   Render
	maxAge   time.Duration
	now      func() time.Time
	onRender func(took time.Duration, size int, err error)

	mu       sync.Mutex
	cur      *Body   // latest finished render
	inflight *flight // render in progress, nil if none
	lastSize int
}

type flight struct {
	start time.Time
	done  chan struct{}
	body  *Body // set before done is closed
}

// Options configures a Cache.
type Options struct {
	// MaxAge is how old (from the start of its render) a body may be when
	// it answers a request. 0 still shares: a request is answered by a
	// render that began after the request arrived, and every request that
	// arrives while a render runs is answered by the next one (one render
	// in flight at a time).
	MaxAge time.Duration
	// Now replaces time.Now (tests).
	Now func() time.Time
	// OnRender, if not nil, is called after every render.
	OnRender func(took time.Duration, size int, err error)
}

// New returns a Cache rendering with render.
func New(render Render, opts Options) *Cache {
	c := &Cache{render: render, maxAge: max(opts.MaxAge, 0), now: opts.Now, onRender: opts.OnRender}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Get returns a body whose render began no earlier than MaxAge before the
// call. It renders in the calling goroutine when no usable render exists or
// runs; otherwise it waits for the one in flight. Only one render runs at a
// time. A render, once begun, is not cancelled with ctx (others may be
// waiting for it); a caller that is only waiting returns ctx.Err() when ctx
// ends.
func (c *Cache) Get(ctx context.Context) (*Body, error) {
	oldest := c.now().Add(-c.maxAge)
	c.mu.Lock()
	for {
		if b := c.cur; b != nil && !b.Start.Before(oldest) {
			c.mu.Unlock()
			return b, nil
		}
		f := c.inflight
		if f == nil {
			break
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !f.start.Before(oldest) {
			return f.body, nil
		}
		// The render that was running began before this request could
		// accept it: wait for it to end (one render at a time), then join
		// or start the next.
		c.mu.Lock()
	}
	f := &flight{start: c.now(), done: make(chan struct{})}
	c.inflight = f
	size := c.lastSize
	c.mu.Unlock()

	return c.run(f, size), nil
}

// run renders into f. A panicking render (a gauge function's panic) still
// ends the flight, with an error for the waiters, and panics on in the
// caller.
func (c *Cache) run(f *flight, size int) (body *Body) {
	var b []byte
	err := errPanicked
	defer func() {
		f.body = &Body{Bytes: b, Err: err, Start: f.start}
		body = f.body
		took := c.now().Sub(f.start)
		c.mu.Lock()
		c.cur, c.inflight = f.body, nil
		if err == nil {
			c.lastSize = len(b)
		}
		c.mu.Unlock()
		close(f.done)
		if c.onRender != nil {
			c.onRender(took, len(b), err)
		}
	}()
	b, err = c.render(make([]byte, 0, size+size/8))
	return nil // set by the deferred function
}

var errPanicked = errors.New("rendering panicked")
