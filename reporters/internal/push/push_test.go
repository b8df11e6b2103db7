package push

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// recorder is a receiver answering each request with the next status of
// its script (then 204), recording bodies and arrival times.
type recorder struct {
	mu     sync.Mutex
	script []int
	header http.Header // set on scripted answers
	bodies []string
	times  []time.Time
	hdrs   []http.Header
	srv    *httptest.Server
}

func newRecorder(t *testing.T, script ...int) *recorder {
	r := &recorder{script: script, header: http.Header{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, string(b))
		r.times = append(r.times, time.Now())
		r.hdrs = append(r.hdrs, req.Header.Clone())
		code := http.StatusNoContent
		if len(r.script) > 0 {
			code, r.script = r.script[0], r.script[1:]
			for k, v := range r.header {
				w.Header()[k] = v
			}
		}
		r.mu.Unlock()
		w.WriteHeader(code)
		io.WriteString(w, "answer "+strconv.Itoa(code))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

func newPusher(t *testing.T, o Options) *Pusher {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.Close(ctx)
	})
	return p
}

// waitStats polls until cond holds, failing after a generous bound.
func waitStats(t *testing.T, p *Pusher, cond func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := p.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats never met the condition: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type count struct{ n atomic.Int64 }

func (c *count) Add(n int64) { c.n.Add(n) }

func TestSendsInOrderWithHeaders(t *testing.T) {
	r := newRecorder(t)
	var sent count
	p := newPusher(t, Options{URL: r.srv.URL, Header: http.Header{"Content-Type": {"application/x-protobuf"}},
		Metrics: Metrics{Sent: &sent}})
	for i := range 5 {
		p.Enqueue([]byte("body" + strconv.Itoa(i)))
	}
	waitStats(t, p, func(s Stats) bool { return s.Sent == 5 && s.Queued == 0 })
	got := r.got()
	for i, b := range got {
		if want := "body" + strconv.Itoa(i); b != want {
			t.Errorf("body %d = %q, want %q (order kept)", i, b, want)
		}
	}
	if ct := r.hdrs[0].Get("Content-Type"); ct != "application/x-protobuf" {
		t.Errorf("Content-Type %q", ct)
	}
	if sent.n.Load() != 5 {
		t.Errorf("Metrics.Sent got %d, want 5", sent.n.Load())
	}
}

func TestRetriesHonourRetryAfter(t *testing.T) {
	r := newRecorder(t, http.StatusServiceUnavailable, http.StatusTooManyRequests)
	r.header.Set("Retry-After", "1")
	var retries count
	p := newPusher(t, Options{URL: r.srv.URL, MinBackoff: time.Millisecond, Metrics: Metrics{Retries: &retries}})
	p.Enqueue([]byte("x"))
	s := waitStats(t, p, func(s Stats) bool { return s.Sent == 1 })
	if s.Retries != 2 || s.Failed != 0 || retries.n.Load() != 2 {
		t.Errorf("stats %+v (Metrics.Retries %d), want 2 retries and no failure", s, retries.n.Load())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := 1; i < 3; i++ {
		// Backoff alone would wait ~1ms; Retry-After says a second.
		if d := r.times[i].Sub(r.times[i-1]); d < time.Second {
			t.Errorf("attempt %d came %v after the previous one, before the Retry-After of 1s", i+1, d)
		}
	}
}

func TestFinal4xxNotRetried(t *testing.T) {
	r := newRecorder(t, http.StatusBadRequest)
	var failed count
	p := newPusher(t, Options{URL: r.srv.URL, MinBackoff: time.Millisecond, Metrics: Metrics{Failed: &failed}})
	p.Enqueue([]byte("bad"))
	p.Enqueue([]byte("good"))
	s := waitStats(t, p, func(s Stats) bool { return s.Sent == 1 && s.Failed == 1 })
	if s.Retries != 0 {
		t.Errorf("a 400 was retried: %+v", s)
	}
	if got := r.got(); len(got) != 2 || got[0] != "bad" || got[1] != "good" {
		t.Errorf("receiver got %q, want [bad good]", got)
	}
	if failed.n.Load() != 1 {
		t.Errorf("Metrics.Failed %d", failed.n.Load())
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	r := newRecorder(t, 500, 500, 500, 500)
	p := newPusher(t, Options{URL: r.srv.URL, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, MaxAttempts: 3})
	p.Enqueue([]byte("x"))
	s := waitStats(t, p, func(s Stats) bool { return s.Failed == 1 })
	if s.Retries != 2 || s.Sent != 0 || len(r.got()) != 3 {
		t.Errorf("stats %+v after %d requests, want 3 attempts (2 retries)", s, len(r.got()))
	}
}

func TestCheckRejects2xxBody(t *testing.T) {
	r := newRecorder(t)
	p := newPusher(t, Options{URL: r.srv.URL, Check: func(b []byte) error {
		if string(b) != "answer 204" && len(b) != 0 {
			t.Errorf("Check got %q", b)
		}
		return io.ErrUnexpectedEOF
	}})
	p.Enqueue([]byte("x"))
	s := waitStats(t, p, func(s Stats) bool { return s.Failed == 1 })
	if s.Retries != 0 || s.Sent != 0 {
		t.Errorf("stats %+v: a body the receiver rejected in its answer is failed, not retried", s)
	}
}

// hungServer accepts connections and never answers; release lets every
// request held so far answer 204.
func hungServer(t *testing.T) (url string, release func(), requests *atomic.Int64) {
	requests = new(atomic.Int64)
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		requests.Add(1)
		select {
		case <-gate:
		case <-req.Context().Done():
		}
	}))
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(func() { release(); srv.Close() })
	return srv.URL, release, requests
}

func TestFullQueueDropsOldest(t *testing.T) {
	var got []string
	var mu sync.Mutex
	gate, arrived := make(chan struct{}), make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		arrived <- struct{}{}
		<-gate
		b, _ := io.ReadAll(req.Body)
		mu.Lock()
		got = append(got, string(b))
		mu.Unlock()
	}))
	defer srv.Close()
	var dropped count
	p := newPusher(t, Options{URL: srv.URL, Queue: 3, Metrics: Metrics{Dropped: &dropped}})
	p.Enqueue([]byte("0"))
	<-arrived // "0" is in flight
	for i := 1; i <= 6; i++ {
		p.Enqueue([]byte(strconv.Itoa(i)))
	}
	if s := p.Stats(); s.Dropped != 3 || s.Queued != 4 {
		t.Errorf("stats %+v, want 3 dropped (1, 2, 3) and 4 queued (0 in flight, 4 5 6)", s)
	}
	close(gate)
	waitStats(t, p, func(s Stats) bool { return s.Sent == 4 })
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"0", "4", "5", "6"}; len(got) != 4 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Errorf("receiver got %q, want %q", got, want)
	}
	if dropped.n.Load() != 3 {
		t.Errorf("Metrics.Dropped %d", dropped.n.Load())
	}
}

// TestEnqueueNeverWaitsForReceiver is the attack: a receiver that accepts
// the connection and never answers, with a request timeout of an hour,
// and one that is down. Enqueue must return regardless; a pusher that
// sent on the caller's goroutine would hang here for the hour.
func TestEnqueueNeverWaitsForReceiver(t *testing.T) {
	hung, _, requests := hungServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	for name, url := range map[string]string{"hung": hung, "down": down} {
		t.Run(name, func(t *testing.T) {
			p := newPusher(t, Options{URL: url, Timeout: time.Hour, Queue: 4, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range 1000 {
					p.Enqueue(make([]byte, 100))
				}
			}()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Enqueue blocked on a receiver that does not answer")
			}
			s := p.Stats()
			if s.Queued > 5 || s.Dropped < 995 {
				t.Errorf("stats %+v: the queue must stay within its bound of 4 (+1 in flight), dropping the rest", s)
			}
			if name == "hung" && requests.Load() == 0 {
				waitStats(t, p, func(Stats) bool { return requests.Load() > 0 })
			}
		})
	}
}

func TestTimeoutBoundsHungRequest(t *testing.T) {
	url, _, requests := hungServer(t)
	p := newPusher(t, Options{URL: url, Timeout: 50 * time.Millisecond, MinBackoff: time.Millisecond, MaxAttempts: 2})
	p.Enqueue([]byte("x"))
	s := waitStats(t, p, func(s Stats) bool { return s.Failed == 1 })
	if s.Retries != 1 || requests.Load() != 2 {
		t.Errorf("stats %+v after %d requests: each attempt must end at the timeout", s, requests.Load())
	}
}

func TestCloseFlushesThenGivesUp(t *testing.T) {
	r := newRecorder(t)
	p := newPusher(t, Options{URL: r.srv.URL})
	for range 3 {
		p.Enqueue([]byte("x"))
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Sent != 3 || s.Queued != 0 {
		t.Errorf("Close did not flush: %+v", s)
	}
	p.Enqueue([]byte("late"))
	if s := p.Stats(); s.Dropped != 1 {
		t.Errorf("a body after Close must be dropped and counted: %+v", s)
	}

	url, _, _ := hungServer(t)
	p = newPusher(t, Options{URL: url, Timeout: time.Hour})
	for range 3 {
		p.Enqueue([]byte("x"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := p.Close(ctx); err == nil {
		t.Error("Close against a hung receiver returned nil")
	}
	if s := p.Stats(); s.Dropped != 3 || s.Queued != 0 || s.Sent != 0 {
		t.Errorf("after Close gave up: %+v, want all 3 dropped", s)
	}
}

func TestBackoffGrowsWithJitter(t *testing.T) {
	p := &Pusher{o: Options{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}}
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		4: 800 * time.Millisecond, 5: time.Second, 20: time.Second} {
		seen := map[time.Duration]bool{}
		for range 50 {
			d := p.backoff(attempt)
			if d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", attempt, d, want/2, want)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("backoff(%d) has no jitter: %v", attempt, seen)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "3": 3 * time.Second, "x": 0, "-1": 0,
		time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat): 0} {
		if got := parseRetryAfter(in); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
	if got := parseRetryAfter(time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)); got < 59*time.Minute {
		t.Errorf("an HTTP date an hour ahead gave %v", got)
	}
}
