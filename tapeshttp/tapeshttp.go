// Package tapeshttp instruments net/http handlers with tapes metrics, as
// client_golang's promhttp.InstrumentHandler* do for Prometheus: a timer
// per route and counters of the answers by status, recorded through any
// tapes.Recorder (the in-process registry, the shm worker client, a Go
// WebAssembly guest).
//
//	m, err := tapeshttp.New(tapes.Default(), tapeshttp.Options{})
//	mux.Handle("GET /users/{id}", m.Handler("users", http.HandlerFunc(user)))
//
// With the default Options, route "users" records
//
//	http.users.latency          timer: every request, from the call until the handler returns
//	http.users.status.2xx       counter per status class (1xx .. 5xx)
//
// Names come from templates: "{route}" is replaced by the route given to
// Handler, "{code}" by the status (200, 404, ...) and "{class}" by its
// class (2xx, 4xx, ...). A route may hold dots ("api.v1.users"); each name
// must be a valid metric name. Metrics are looked up when Handler is
// called and when a status is first seen, never per request otherwise.
//
// What counts as the status: the first WriteHeader with a final code (a 1xx
// other than 101 is informational), or 200 when the handler writes, flushes
// or returns without calling WriteHeader (net/http sends 200 then). A
// handler that panics before sending a status counts as 500 (net/http
// drops the connection); a hijacked connection counts under the status
// "hijacked" ("http.ws.status.hijacked"), since what the handler sends
// over it is not an HTTP status tapes can see.
//
// The wrapper handed to the handler keeps http.Flusher, http.Hijacker,
// http.Pusher and io.ReaderFrom exactly when the server's writer has them
// (see Wrap), and unwraps for http.ResponseController.
package tapeshttp

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tapes-go/tapes"
	"github.com/tapes-go/tapes/wire"
)

// Options names the metrics. Empty fields take the defaults.
type Options struct {
	// Latency is the timer's name template (default "http.{route}.latency";
	// "-" records no timer).
	Latency string
	// Status is the status counters' name template, holding "{code}" or
	// "{class}" (default "http.{route}.status.{class}"; "-" counts no
	// status). "{code}" makes up to 900 counters per route (net/http
	// allows codes 100..999); "{class}" at most 10.
	Status string
	// Errors, if set, names a counter of the answers with a 5xx status
	// (and panics), e.g. "http.{route}.errors". Default: none.
	Errors string
}

// Middleware makes instrumented handlers that share a Recorder and names.
type Middleware struct {
	rec    tapes.Recorder
	opts   Options
	byCode bool
}

// New checks the templates and returns a Middleware recording through rec.
func New(rec tapes.Recorder, opts Options) (*Middleware, error) {
	if rec == nil {
		return nil, errors.New("tapeshttp: nil Recorder")
	}
	if opts.Latency == "" {
		opts.Latency = "http.{route}.latency"
	}
	if opts.Status == "" {
		opts.Status = "http.{route}.status.{class}"
	}
	m := &Middleware{rec: rec, opts: opts}
	if opts.Status != "-" {
		code, class := strings.Contains(opts.Status, "{code}"), strings.Contains(opts.Status, "{class}")
		if code == class {
			return nil, fmt.Errorf("tapeshttp: Status %q: needs exactly one of {code} and {class}", opts.Status)
		}
		m.byCode = code
	}
	// Check the templates with a sample route, so that a bad template
	// fails here and not at the first request.
	for _, tpl := range []string{opts.Latency, opts.Status, opts.Errors} {
		if tpl == "" || tpl == "-" {
			continue
		}
		if _, err := m.name(tpl, "route", "200", "2xx"); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Middleware) name(tpl, route, code, class string) (string, error) {
	n := strings.NewReplacer("{route}", route, "{code}", code, "{class}", class).Replace(tpl)
	if err := wire.ValidateName(n); err != nil {
		return "", fmt.Errorf("tapeshttp: template %q: %w", tpl, err)
	}
	return n, nil
}

// Handler returns h instrumented under route. It fails if route makes an
// invalid name (or a name another kind of metric holds: then the
// Recorder's panic).
func (m *Middleware) Handler(route string, h http.Handler) (http.Handler, error) {
	in := &instrumented{m: m, h: h, route: route}
	if m.opts.Latency != "-" {
		n, err := m.name(m.opts.Latency, route, "", "")
		if err != nil {
			return nil, err
		}
		in.latency = m.rec.Timer(n)
	}
	if m.opts.Errors != "" && m.opts.Errors != "-" {
		n, err := m.name(m.opts.Errors, route, "", "")
		if err != nil {
			return nil, err
		}
		in.errors = m.rec.Counter(n)
	}
	if m.opts.Status != "-" {
		if _, err := m.name(m.opts.Status, route, "200", "2xx"); err != nil {
			return nil, err
		}
		if m.byCode {
			in.status = make([]atomic.Pointer[counter], 1000)
		} else {
			in.status = make([]atomic.Pointer[counter], 10)
		}
	}
	return in, nil
}

// MustHandler is Handler for routes fixed in the program: it panics on an
// error, as the Recorder's methods do on an invalid name.
func (m *Middleware) MustHandler(route string, h http.Handler) http.Handler {
	in, err := m.Handler(route, h)
	if err != nil {
		panic(err)
	}
	return in
}

type counter struct{ c tapes.CounterHandle }

type instrumented struct {
	m       *Middleware
	h       http.Handler
	route   string
	latency tapes.TimerHandle
	errors  tapes.CounterHandle
	// status holds the status counters, created at the first answer with
	// that code (or class); slot 0 is "hijacked".
	status []atomic.Pointer[counter]
}

func (in *instrumented) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ww, s := wrap(w)
	finished := false
	// Deferred, without recover: a panicking handler is still counted, and
	// net/http sees the panic (and its stack) unchanged.
	defer func() {
		if in.latency != nil {
			in.latency.UpdateSince(start)
		}
		code := s.Status
		switch {
		case s.Hijacked:
			code = -1
		case code == 0 && !finished:
			code = http.StatusInternalServerError
		case code == 0:
			code = http.StatusOK
		}
		if in.errors != nil && code >= 500 && code <= 599 {
			in.errors.Inc()
		}
		in.count(code)
	}()
	in.h.ServeHTTP(ww, r)
	finished = true
}

// count adds one to the counter of code (-1: hijacked).
func (in *instrumented) count(code int) {
	if in.status == nil {
		return
	}
	i := 0
	switch {
	case code < 0:
	case in.m.byCode:
		i = code
	default:
		i = code / 100
	}
	if i < 0 || i >= len(in.status) {
		return // net/http refuses such codes: nothing was sent
	}
	c := in.status[i].Load()
	if c == nil {
		codeS, classS := strconv.Itoa(code), strconv.Itoa(code/100)+"xx"
		if code < 0 {
			codeS, classS = "hijacked", "hijacked"
		}
		n, err := in.m.name(in.m.opts.Status, in.route, codeS, classS)
		if err != nil {
			return // checked in Handler with the same route; unreachable
		}
		c = &counter{in.m.rec.Counter(n)}
		if !in.status[i].CompareAndSwap(nil, c) {
			c = in.status[i].Load()
		}
	}
	c.c.Inc()
}
