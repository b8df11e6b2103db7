package tapeshttp

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapes-go/tapes"
	"github.com/tapes-go/tapes/registry"
)

// Every combination of the four optional interfaces: the wrapper has
// exactly the ones the original has, and each reaches the original.
func TestWrapPreservesExactlyTheInterfaces(t *testing.T) {
	for set := range 16 {
		orig, base := fakeWriter(set)
		w, resp := Wrap(orig)
		_, f := w.(http.Flusher)
		_, h := w.(http.Hijacker)
		_, p := w.(http.Pusher)
		_, r := w.(io.ReaderFrom)
		got := b2i(f) | b2i(h)<<1 | b2i(p)<<2 | b2i(r)<<3
		if got != set {
			t.Errorf("set %04b: wrapper implements %04b", set, got)
			continue
		}
		if u, ok := w.(interface{ Unwrap() http.ResponseWriter }); !ok || u.Unwrap() != orig {
			t.Errorf("set %04b: Unwrap does not return the original", set)
		}
		if f {
			w.(http.Flusher).Flush()
			if base.flushes != 1 || resp.Status != 200 {
				t.Errorf("set %04b: Flush reached %d times, status %d", set, base.flushes, resp.Status)
			}
		}
		if p {
			if err := w.(http.Pusher).Push("/style.css", nil); err != nil || len(base.pushes) != 1 {
				t.Errorf("set %04b: Push: %v %v", set, err, base.pushes)
			}
		}
		if r {
			n, err := w.(io.ReaderFrom).ReadFrom(strings.NewReader("abc"))
			if n != 3 || err != nil || base.readFroms != 1 || resp.Bytes != 3 || resp.Status != 200 {
				t.Errorf("set %04b: ReadFrom %d %v, reached %d, resp %+v", set, n, err, base.readFroms, resp)
			}
		}
		if h {
			c, _, err := w.(http.Hijacker).Hijack()
			if err != nil || base.hijacks != 1 || !resp.Hijacked {
				t.Errorf("set %04b: Hijack %v, reached %d, resp %+v", set, err, base.hijacks, resp)
			}
			c.Close()
		}
		// http.ResponseController finds Flush through the wrapper, or
		// reports that the writer cannot flush.
		err := http.NewResponseController(w).Flush()
		if f != (err == nil) || (!f && !errors.Is(err, http.ErrNotSupported)) {
			t.Errorf("set %04b: ResponseController.Flush: %v", set, err)
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestStatusSeen(t *testing.T) {
	for name, tc := range map[string]struct {
		h    func(w http.ResponseWriter)
		want int
	}{
		"nothing written":          {func(w http.ResponseWriter) {}, 0},
		"write":                    {func(w http.ResponseWriter) { w.Write([]byte("x")) }, 200},
		"404":                      {func(w http.ResponseWriter) { w.WriteHeader(404); w.WriteHeader(500) }, 404},
		"103 then 201":             {func(w http.ResponseWriter) { w.WriteHeader(103); w.WriteHeader(201) }, 201},
		"101 is final":             {func(w http.ResponseWriter) { w.WriteHeader(101) }, 101},
		"write then WriteHeader":   {func(w http.ResponseWriter) { w.Write(nil); w.WriteHeader(500) }, 200},
		"http.Error":               {func(w http.ResponseWriter) { http.Error(w, "no", 503) }, 503},
		"flush before WriteHeader": {func(w http.ResponseWriter) { w.(http.Flusher).Flush(); w.WriteHeader(500) }, 200},
	} {
		orig, base := fakeWriter(0b1111)
		w, resp := Wrap(orig)
		tc.h(w)
		if resp.Status != tc.want {
			t.Errorf("%s: Status %d, want %d (the writer got %v)", name, resp.Status, tc.want, base.codes)
		}
	}
}

func newMiddleware(t *testing.T, opts Options) (*registry.Registry, *Middleware) {
	t.Helper()
	r := registry.New()
	m, err := New(tapes.On(r), opts)
	if err != nil {
		t.Fatal(err)
	}
	return r, m
}

func counterValue(r *registry.Registry, name string) int64 {
	m, ok := r.Get(name)
	if !ok {
		return -1
	}
	return m.(*registry.Counter).Value()
}

func TestCountsByClassAndCode(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, "ok")
		case "/missing":
			http.NotFound(w, r)
		case "/broken":
			w.WriteHeader(502)
		case "/panic":
			panic("boom")
		case "/panic-after-201":
			w.WriteHeader(201)
			panic(http.ErrAbortHandler)
		}
	})
	serve := func(h http.Handler, path string) {
		defer func() { recover() }()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	r, m := newMiddleware(t, Options{Errors: "http.{route}.errors"})
	h := m.MustHandler("api.v1", handler)
	for path, n := range map[string]int{"/ok": 3, "/missing": 2, "/broken": 1, "/panic": 1, "/panic-after-201": 1} {
		for range n {
			serve(h, path)
		}
	}
	for name, want := range map[string]int64{
		"http.api.v1.status.2xx": 4, "http.api.v1.status.4xx": 2, "http.api.v1.status.5xx": 2,
		"http.api.v1.errors": 2, "http.api.v1.status.3xx": -1,
	} {
		if got := counterValue(r, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	lat, _ := r.Get("http.api.v1.latency")
	if c := lat.(*registry.Timer).Count(); c != 8 {
		t.Errorf("latency count %d, want 8 (panics are timed too)", c)
	}

	r, m = newMiddleware(t, Options{Status: "web.{route}.code.{code}", Latency: "-"})
	h = m.MustHandler("home", handler)
	serve(h, "/ok")
	serve(h, "/missing")
	serve(h, "/missing")
	if a, b := counterValue(r, "web.home.code.200"), counterValue(r, "web.home.code.404"); a != 1 || b != 2 {
		t.Errorf("per-code counters %d %d, want 1 2", a, b)
	}
	if _, ok := r.Get("http.home.latency"); ok || r.Len() != 2 {
		t.Errorf("Latency \"-\" still registered a timer (%d metrics)", r.Len())
	}
}

func TestBadTemplates(t *testing.T) {
	for _, opts := range []Options{
		{Status: "http.{route}.status"},
		{Status: "http.{route}.{code}.{class}"},
		{Latency: "http..{route}"},
		{Errors: "http.{route}.err ors"},
	} {
		if _, err := New(tapes.On(registry.New()), opts); err == nil {
			t.Errorf("%+v accepted", opts)
		}
	}
	_, m := newMiddleware(t, Options{})
	if _, err := m.Handler("bad route", http.NotFoundHandler()); err == nil {
		t.Error("route with a space accepted")
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("nil Recorder accepted")
	}
}

// Through a real server: streaming reaches the client before the handler
// returns, a hijacked connection works and is counted, io.Copy from a file
// goes through ReaderFrom, and under HTTP/2 the handler sees a Pusher.
func TestRealServer(t *testing.T) {
	r, m := newMiddleware(t, Options{})
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/stream", m.MustHandler("stream", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second\n")
	})))
	mux.Handle("/ws", m.MustHandler("ws", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nhello")
		rw.Flush()
	})))
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, []byte(strings.Repeat("z", 100000)), 0o600)
	mux.Handle("/file", m.MustHandler("file", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if _, ok := w.(io.ReaderFrom); !ok {
			t.Error("no ReaderFrom on an HTTP/1 writer")
		}
		f, _ := os.Open(file)
		defer f.Close()
		io.Copy(w, f)
	})))
	pushers := make(chan bool, 1)
	mux.Handle("/push", m.MustHandler("push", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, ok := w.(http.Pusher)
		pushers <- ok
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("streamed %q %v before the handler returned", line, err)
	}
	close(release)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	req, _ := http.NewRequest("GET", srv.URL+"/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "x")
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", err, resp)
	}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
		b, _ := io.ReadAll(rwc)
		if string(b) != "hello" {
			t.Errorf("hijacked conn said %q", b)
		}
		rwc.Close()
	}

	resp, err = http.Get(srv.URL + "/file")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(b) != 100000 {
		t.Errorf("file: %d bytes", len(b))
	}

	h2 := httptest.NewUnstartedServer(mux)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	defer h2.Close()
	c := h2.Client()
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	c.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	resp, err = c.Get(h2.URL + "/push")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || !<-pushers {
		t.Errorf("HTTP/%d: the handler saw no http.Pusher", resp.ProtoMajor)
	}

	deadline := time.Now().Add(10 * time.Second)
	for counterValue(r, "http.ws.status.hijacked") != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the handler's defer runs after the client saw its bytes
	}
	for name, want := range map[string]int64{
		"http.stream.status.2xx": 1, "http.ws.status.hijacked": 1, "http.file.status.2xx": 1, "http.push.status.2xx": 1,
	} {
		if got := counterValue(r, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// discard is a ResponseWriter with every optional interface that keeps
// nothing, so that benchmarks measure the middleware, not the writer.
type discard struct{ h http.Header }

func (d discard) Header() http.Header                        { return d.h }
func (discard) WriteHeader(int)                              {}
func (discard) Write(p []byte) (int, error)                  { return len(p), nil }
func (discard) Flush()                                       {}
func (discard) Hijack() (net.Conn, *bufio.ReadWriter, error) { return nil, nil, http.ErrNotSupported }
func (discard) Push(string, *http.PushOptions) error         { return nil }
func (discard) ReadFrom(r io.Reader) (int64, error)          { return io.Copy(io.Discard, r) }

func BenchmarkHandler(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })
	m, err := New(tapes.On(registry.New()), Options{})
	if err != nil {
		b.Fatal(err)
	}
	// handwritten is what the examples did before tapeshttp: a timer and
	// a status writer that hides every optional interface.
	reg := registry.New()
	handwritten := handwrittenMiddleware(ok, reg.Timer("hand.latency"), reg.Counter("hand.errors"))
	for name, h := range map[string]http.Handler{
		"bare":         ok,
		"handwritten":  handwritten,
		"instrumented": m.MustHandler("bench", ok),
	} {
		b.Run(name, func(b *testing.B) {
			w := discard{http.Header{}}
			req := httptest.NewRequest("GET", "/", nil)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, req)
			}
		})
	}
	b.Run("wrap-only", func(b *testing.B) {
		w := discard{http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			ww, _ := Wrap(w)
			ww.WriteHeader(200)
		}
	})
}

// handwrittenMiddleware takes next as an interface, as a real middleware
// does, so that the compiler cannot see the handler and keep the status
// writer on the stack.
//
//go:noinline
func handwrittenMiddleware(next http.Handler, lat *registry.Timer, errs *registry.Counter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: 200}
		defer lat.Time().Stop()
		next.ServeHTTP(sw, r)
		if sw.status >= 500 {
			errs.Inc()
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
