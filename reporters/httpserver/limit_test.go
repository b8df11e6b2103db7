package httpserver

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
)

func counterValue(t *testing.T, r *registry.Registry, name string) int64 {
	t.Helper()
	m, ok := r.Get(name)
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	return m.(*registry.Counter).Value()
}

// slowReader requests path and reads nothing.
func slowReader(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	c := dial(t, addr)
	io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
	return c
}

// smallSocketBuffers gives every connection the servers accept during
// the test a 16 KiB send buffer, which also turns off its autotuning (it
// reaches 4 MiB on loopback here).
func smallSocketBuffers(t *testing.T) {
	testAccepted = func(c net.Conn) { c.(*net.TCPConn).SetWriteBuffer(16 << 10) }
	t.Cleanup(func() { testAccepted = nil })
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// client is an HTTP client with its own connections and a bound on a
// request: "it answered at all", not a speed assertion.
func client() *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{}}
}

// At the cap, idle keep-alive connections and connections that never send
// a request are closed to make room: a scraper always gets in.
func TestCapEvictsWaitingConnections(t *testing.T) {
	r := registry.New()
	s, err := Start("", r, Options{MaxConns: 8, ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute, MetricsPrefix: "srv"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 4 keep-alive connections left idle after a request, 12 that send nothing.
	for range 4 {
		c := dial(t, s.Addr())
		io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for range 12 {
		dial(t, s.Addr())
	}
	for i := range 5 {
		resp, err := client().Get(s.URL() + "/stats")
		if err != nil {
			t.Fatalf("scrape %d with the cap full of waiting connections: %v", i, err)
		}
		resp.Body.Close()
	}
	if ev := counterValue(t, r, "srv.connections.evicted"); ev < 8 {
		t.Errorf("evicted %d connections, want at least 8", ev)
	}
	if open := r.Stats()["srv"].(map[string]any)["connections"].(map[string]any)["open"].(map[string]any)["value"].(float64); open > 8 {
		t.Errorf("%v connections open, cap 8", open)
	}
}

// A request just begun is not evicted: at the cap with every connection in
// a young request the newcomer is refused (and counted); once a request has
// run past the grace period (a slow reader), it makes room, and a reader
// that takes nothing is dropped at the chunk timeout anyway.
func TestCapRefusesThenEvictsSlowReaders(t *testing.T) {
	smallSocketBuffers(t)
	r := bigRegistry()
	s, err := Start("", r, Options{MaxConns: 2, MetricsPrefix: "srv"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Two slow readers: request a large body, read nothing.
	for range 2 {
		slowReader(t, s.Addr(), "/stats")
	}
	time.Sleep(200 * time.Millisecond) // both are inside their requests
	c := dial(t, s.Addr())
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a third connection was served while two young requests held the cap of 2")
	}
	if n := counterValue(t, r, "srv.connections.refused"); n < 1 {
		t.Fatalf("refused = %d, want >= 1", n)
	}
	time.Sleep(busyGrace)
	resp, err := client().Get(s.URL() + "/metrics")
	if err != nil {
		t.Fatalf("scrape after the slow readers passed the grace period: %v", err)
	}
	resp.Body.Close()
	ev, wt := counterValue(t, r, "srv.connections.evicted"), counterValue(t, r, "srv.timeouts.write")
	if ev+wt < 1 {
		t.Fatalf("evicted = %d, write timeouts = %d: the slow readers were neither evicted nor dropped", ev, wt)
	}
}

// A client that takes no bytes of a large body is dropped after the chunk
// timeout instead of holding a write token; other scrapes go on meanwhile.
func TestSilentReaderDroppedAtChunkTimeout(t *testing.T) {
	smallSocketBuffers(t)
	r := bigRegistry()
	s, err := Start("", r, Options{MetricsPrefix: "srv"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var stuck []net.Conn
	for range 8 { // more than the gate's tokens
		stuck = append(stuck, slowReader(t, s.Addr(), "/stats"))
	}
	for i := range 3 {
		resp, err := client().Get(s.URL() + "/stats")
		if err != nil {
			t.Fatalf("scrape %d beside 8 silent readers: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	deadline := time.Now().Add(20 * time.Second)
	for counterValue(t, r, "srv.timeouts.write") < 8 {
		if time.Now().After(deadline) {
			t.Fatalf("write timeouts = %d after 20s, want 8 silent readers dropped", counterValue(t, r, "srv.timeouts.write"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range stuck {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("a dropped silent reader's connection is not closed: %v", err)
		}
	}
}

// bigRegistry renders to a /stats body of ~450 KB: more than the socket
// buffers hold with smallSocketBuffers, so that a client reading nothing
// blocks the server's writes.
func bigRegistry() *registry.Registry {
	r := registry.New()
	long := strings.Repeat("x", 200)
	for i := range 2000 {
		r.Counter("big." + long + itoa(i)).Inc()
	}
	return r
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		if i /= 10; i == 0 {
			return string(b[n:])
		}
	}
}

// A client trickling its headers is closed at ReadHeaderTimeout.
func TestSlowlorisClosedAtHeaderTimeout(t *testing.T) {
	r := registry.New()
	s, err := Start("", r, Options{ReadHeaderTimeout: 300 * time.Millisecond, MetricsPrefix: "srv"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := dial(t, s.Addr())
	io.WriteString(c, "GET /stats HTTP/1.1\r\nHost: x\r\n")
	closed := make(chan struct{})
	go func() {
		// The server answers 408 or closes; either way reads end.
		io.Copy(io.Discard, c)
		close(closed)
	}()
	start := time.Now()
	for i := 0; ; i++ {
		select {
		case <-closed:
			if el := time.Since(start); el > 10*time.Second {
				t.Fatalf("closed only after %v", el)
			}
			if n := counterValue(t, r, "srv.timeouts.header"); n != 1 {
				t.Fatalf("timeouts.header = %d, want 1", n)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
		if i > 100 {
			t.Fatal("a slowloris connection is still open after 10s of trickled headers")
		}
		io.WriteString(c, "X") // one more header byte
	}
}

// Concurrent scrapes share one rendering per MaxAge; the server counts
// requests and renders.
func TestConcurrentScrapesShareRenders(t *testing.T) {
	r := registry.New()
	for i := range 200 {
		r.Timer("t.x" + itoa(i)).Update(time.Duration(i) * time.Millisecond)
	}
	s, err := Start("", r, Options{MaxAge: time.Hour, MetricsPrefix: "srv"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 100
	var wg sync.WaitGroup
	cl := client()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := "/stats"
			if i%2 == 1 {
				path = "/metrics"
			}
			resp, err := cl.Get(s.URL() + path)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || len(b) < 1000 {
				t.Errorf("%s: %d, %d bytes", path, resp.StatusCode, len(b))
			}
		}()
	}
	wg.Wait()
	for _, ep := range []string{"stats", "metrics"} {
		if got := counterValue(t, r, "srv."+ep+".requests"); got != n/2 {
			t.Errorf("%s.requests = %d, want %d", ep, got, n/2)
		}
		m, _ := r.Get("srv." + ep + ".renders")
		if c := m.(*registry.Timer).Snapshot().Count; c != 1 {
			t.Errorf("%s rendered %d times for %d scrapes within MaxAge, want 1", ep, c, n/2)
		}
	}
}

// Options that name an existing metric of another kind fail Start cleanly.
func TestMetricsPrefixConflict(t *testing.T) {
	r := registry.New()
	r.Counter("srv.connections")
	if _, err := Start("", r, Options{MetricsPrefix: "srv"}); err == nil || !strings.Contains(err.Error(), "httpserver: own metrics") {
		t.Fatalf("Start = %v, want an own-metrics error", err)
	}
}
