package rendercache

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gate is a render that counts its calls and blocks until released.
type gate struct {
	calls   atomic.Int64
	started chan struct{} // one send per render
	release chan struct{} // one receive per render
}

func newGate() *gate {
	return &gate{started: make(chan struct{}, 100), release: make(chan struct{}, 100)}
}

func (g *gate) render(dst []byte) ([]byte, error) {
	n := g.calls.Add(1)
	g.started <- struct{}{}
	<-g.release
	return strconv.AppendInt(dst, n, 10), nil
}

func waitFor(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("render did not start")
	}
}

// Many concurrent requests while a render runs cost one more render in
// total, and all of them get the same bytes.
func TestConcurrentRequestsShareOneRender(t *testing.T) {
	for _, maxAge := range []time.Duration{0, time.Hour} {
		g := newGate()
		c := New(g.render, Options{MaxAge: maxAge})
		const n = 200
		bodies := make([]*Body, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, err := c.Get(context.Background())
				if err != nil {
					t.Error(err)
				}
				bodies[i] = b
			}()
		}
		waitFor(t, g.started)
		// Let every goroutine queue up behind the first render.
		time.Sleep(50 * time.Millisecond)
		g.release <- struct{}{}
		if maxAge == 0 {
			// Requests that arrived during render 1 need a render that
			// began after them: exactly one more serves them all.
			waitFor(t, g.started)
			g.release <- struct{}{}
		}
		wg.Wait()
		want := int64(1)
		if maxAge == 0 {
			want = 2
		}
		if got := g.calls.Load(); got != want {
			t.Fatalf("MaxAge %v: %d renders for %d concurrent requests, want %d", maxAge, got, n, want)
		}
		distinct := map[string]int{}
		for _, b := range bodies {
			distinct[string(b.Bytes)]++
		}
		if maxAge != 0 && len(distinct) != 1 {
			t.Fatalf("MaxAge %v: bodies %v, want one shared body", maxAge, distinct)
		}
	}
}

// With MaxAge 0 a request never gets a body rendered before it arrived.
func TestZeroMaxAgeNeverAnswersWithAnOlderRender(t *testing.T) {
	g := newGate()
	c := New(g.render, Options{})
	first := make(chan *Body)
	go func() { b, _ := c.Get(context.Background()); first <- b }()
	waitFor(t, g.started)
	second := make(chan *Body)
	go func() { b, _ := c.Get(context.Background()); second <- b }()
	time.Sleep(20 * time.Millisecond)
	g.release <- struct{}{}
	if b := <-first; string(b.Bytes) != "1" {
		t.Fatalf("first request got %q", b.Bytes)
	}
	waitFor(t, g.started)
	g.release <- struct{}{}
	if b := <-second; string(b.Bytes) != "2" {
		t.Fatalf("request arriving during render 1 got %q, want render 2", b.Bytes)
	}
	// Sequential requests each render.
	g.release <- struct{}{}
	if b, _ := c.Get(context.Background()); string(b.Bytes) != "3" {
		t.Fatalf("a later request got %q, want a fresh render", b.Bytes)
	}
}

// A body is reused until it is MaxAge old, then rendered again.
func TestRefreshAfterMaxAge(t *testing.T) {
	var now atomic.Int64
	var renders atomic.Int64
	var seen []int
	c := New(func(dst []byte) ([]byte, error) {
		return strconv.AppendInt(dst, renders.Add(1), 10), nil
	}, Options{
		MaxAge:   time.Second,
		Now:      func() time.Time { return time.Unix(0, now.Load()) },
		OnRender: func(_ time.Duration, size int, _ error) { seen = append(seen, size) },
	})
	get := func() string {
		b, err := c.Get(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return string(b.Bytes)
	}
	for i, step := range []struct {
		at   time.Duration
		want string
	}{
		{0, "1"}, {500 * time.Millisecond, "1"}, {time.Second, "1"},
		{time.Second + 1, "2"}, {1500 * time.Millisecond, "2"}, {5 * time.Second, "3"},
	} {
		now.Store(int64(step.at))
		if got := get(); got != step.want {
			t.Fatalf("step %d at %v: body %q, want %q", i, step.at, got, step.want)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("OnRender called %d times, want 3", len(seen))
	}
}

// A waiter whose context ends leaves; the render goes on for the others.
func TestWaiterLeavesOnContextEnd(t *testing.T) {
	g := newGate()
	c := New(g.render, Options{MaxAge: time.Hour})
	done := make(chan *Body)
	go func() { b, _ := c.Get(context.Background()); done <- b }()
	waitFor(t, g.started)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Get(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting Get = %v, want DeadlineExceeded", err)
	}
	g.release <- struct{}{}
	if b := <-done; string(b.Bytes) != "1" {
		t.Fatalf("renderer got %q", b.Bytes)
	}
}

// A render error is shared like a body; a panicking render ends its flight
// with an error for the waiters and panics in its own caller.
func TestErrorsAndPanics(t *testing.T) {
	boom := errors.New("boom")
	c := New(func(dst []byte) ([]byte, error) { return dst, boom }, Options{})
	if b, err := c.Get(context.Background()); err != nil || !errors.Is(b.Err, boom) {
		t.Fatalf("Get = %v, %v; want a body carrying the render error", b, err)
	}

	started, release := make(chan struct{}), make(chan struct{})
	c = New(func(dst []byte) ([]byte, error) {
		close(started)
		<-release
		panic("gauge function panicked")
	}, Options{MaxAge: time.Hour})
	panicked := make(chan any)
	go func() {
		defer func() { panicked <- recover() }()
		c.Get(context.Background())
	}()
	<-started
	waiter := make(chan *Body)
	go func() { b, _ := c.Get(context.Background()); waiter <- b }()
	time.Sleep(20 * time.Millisecond)
	close(release)
	if p := <-panicked; p == nil {
		t.Fatal("the rendering caller did not panic")
	}
	select {
	case b := <-waiter:
		if b.Err == nil {
			t.Fatal("waiter got no error from a panicked render")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter hangs after a panicked render")
	}
}

func TestAcceptsGzip(t *testing.T) {
	for h, want := range map[string]bool{
		"": false, "gzip": true, "GZIP": true, "br, gzip": true, "gzip;q=0": false, "gzip; q=0.5": true,
		"*": true, "identity": false, "deflate, br": false, "gzip;q=0.0, br": false, "x-gzip": false,
	} {
		if got := AcceptsGzip(h); got != want {
			t.Errorf("AcceptsGzip(%q) = %v, want %v", h, got, want)
		}
	}
}

// A gzip-accepting request gets the same bytes compressed, compressed once
// per body; HEAD gets the headers only.
func TestServeGzip(t *testing.T) {
	plain := []byte(strings.Repeat("metric_total 1\n", 1000))
	b := &Body{Bytes: plain}
	for _, enc := range []string{"", "gzip"} {
		for _, method := range []string{"GET", "HEAD"} {
			req := httptest.NewRequest(method, "/", nil)
			req.Header.Set("Accept-Encoding", enc)
			rec := httptest.NewRecorder()
			Serve(rec, req, b, "text/plain", "")
			got := rec.Body.Bytes()
			if method == "HEAD" {
				if len(got) != 0 || rec.Header().Get("Content-Length") == "" {
					t.Fatalf("HEAD %q: %d body bytes, Content-Length %q", enc, len(got), rec.Header().Get("Content-Length"))
				}
				continue
			}
			if enc == "gzip" {
				if rec.Header().Get("Content-Encoding") != "gzip" || len(got) >= len(plain)/10 {
					t.Fatalf("gzip: Content-Encoding %q, %d bytes for %d", rec.Header().Get("Content-Encoding"), len(got), len(plain))
				}
				zr, err := gzip.NewReader(bytes.NewReader(got))
				if err != nil {
					t.Fatal(err)
				}
				if got, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("%s %q: body differs", method, enc)
			}
			if cl, _ := strconv.Atoi(rec.Header().Get("Content-Length")); cl != rec.Body.Len() {
				t.Fatalf("Content-Length %d for %d bytes", cl, rec.Body.Len())
			}
		}
	}
	if g1, g2 := b.Gzip(), b.Gzip(); &g1[0] != &g2[0] {
		t.Fatal("Gzip compressed twice")
	}
	rec := httptest.NewRecorder()
	Serve(rec, httptest.NewRequest("GET", "/", nil), &Body{Err: errors.New("bad namespace")}, "text/plain", "rendering: ")
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), "rendering: bad namespace") {
		t.Fatalf("error body: %d %q", rec.Code, rec.Body.String())
	}
}
