// Package httpserver is a standalone HTTP server for a registry, tapes'
// HTTPReporter(port) for programs without an HTTP stack of their own:
//
//	srv, err := httpserver.Start(":8080", reg, httpserver.Options{})
//	defer srv.Shutdown(ctx)
//
// It serves
//
//	/stats    the stats tree as JSON (package httpjson)
//	/metrics  Prometheus text 0.0.4, OpenMetrics or protobuf with native
//	          histograms, as the scraper's Accept header asks (package prometheus)
//
// It binds to 127.0.0.1 unless told otherwise: an address without a host
// (":8080", "") means 127.0.0.1, because metrics often reveal more than a
// service should publish. Binding to all interfaces is explicit:
// "0.0.0.0:8080" or "[::]:8080".
//
// No client can freeze or starve it (tapes-host serves through it): every
// phase of a connection has a timeout, the number of open connections is
// capped below the process's file-descriptor limit, and at the cap a new
// connection makes room by closing the connection that has waited longest
// without a request in progress, so idle or slow clients cannot lock a
// scraper out. Concurrent scrapes share one rendering (see Options.MaxAge).
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/httpjson"
	"github.com/tapes-go/tapes/reporters/internal/rendercache"
	"github.com/tapes-go/tapes/reporters/prometheus"
)

// Defaults of the zero Options.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxHeaderBytes    = 8 << 10
	DefaultMaxConns          = 1024
)

// Options configures a Server. The zero value is ready to use and safe
// against hostile clients. For every duration and limit, 0 means the
// default and a negative value means none (not advisable on a port others
// can reach).
type Options struct {
	// Prometheus configures /metrics. Its MaxAge and OnRender are
	// overridden by MaxAge and MetricsPrefix below.
	Prometheus prometheus.Options
	// Logger receives the HTTP server's errors; nil means slog.Default().
	Logger *slog.Logger

	// MaxAge is how old a shared rendering of /stats or /metrics may be
	// when it answers a scrape. 0 renders for every wave of concurrent
	// scrapes (a scrape never sees numbers from before it arrived, and
	// renders never overlap); d > 0 renders at most once per d per
	// endpoint whatever the number of scrapers.
	MaxAge time.Duration

	// ReadHeaderTimeout bounds the time from the connection's first byte
	// of a request (or from its accept) to the end of the request headers:
	// slowloris clients trickling headers are closed after it.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the end
	// of the response, whatever the client's read speed.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a keep-alive connection waits for its
	// next request (when negative, ReadTimeout does: net/http's rule).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request headers.
	MaxHeaderBytes int
	// MaxConns caps the open connections. It is further capped at the
	// process's RLIMIT_NOFILE minus a reserve (a quarter of the limit, at
	// least 64 descriptors), so that the rest of the process keeps file
	// descriptors whatever clients do.
	MaxConns int

	// MetricsPrefix, if not empty, registers the server's own metrics in
	// the served registry under this prefix: connections.accepted,
	// .open, .limit, .evicted, .refused, .fd_exhausted; timeouts.header,
	// .idle, .write; and per endpoint (stats, metrics) requests and
	// renders (a timer: its count is the number of renders).
	MetricsPrefix string

	// Handlers serves more paths (health probes, say) behind the same
	// timeouts, cap and write gate; "/stats" and "/metrics" are the
	// server's own.
	Handlers map[string]http.Handler
}

// Server serves one registry until Shutdown or Close.
type Server struct {
	srv  *http.Server
	ln   *limitListener
	done chan struct{}
	err  error // from Serve, read after done is closed
}

func orDefault[T time.Duration | int](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// Start listens on addr (host:port; port 0 picks a free port, an empty
// host means 127.0.0.1) and serves r in a new goroutine.
func Start(addr string, r *registry.Registry, opts Options) (*Server, error) {
	if r == nil {
		return nil, errors.New("httpserver: nil registry")
	}
	laddr, err := ListenAddr(addr)
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	m, err := newSelfMetrics(r, opts.MetricsPrefix)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", laddr)
	if err != nil {
		return nil, fmt.Errorf("httpserver: %w", err)
	}
	l := newLimitListener(ln, opts.MaxConns, m, logger)

	mux := http.NewServeMux()
	mux.Handle("/stats", m.endpoint("stats").count(httpjson.NewHandler(r, httpjson.Options{
		MaxAge: opts.MaxAge, OnRender: m.endpoint("stats").onRender,
	})))
	popts := opts.Prometheus
	popts.MaxAge, popts.OnRender = opts.MaxAge, m.endpoint("metrics").onRender
	mux.Handle("/metrics", m.endpoint("metrics").count(prometheus.Handler(r, popts)))
	for path, hd := range opts.Handlers {
		if path == "/stats" || path == "/metrics" {
			ln.Close()
			return nil, fmt.Errorf("httpserver: Handlers: %s is served by the server itself", path)
		}
		mux.Handle(path, hd)
	}
	// Every request (404s included) is tracked, so that the cap knows
	// which connections are inside one.
	writeTimeout := orDefault(opts.WriteTimeout, DefaultWriteTimeout)
	root := l.track(mux, rendercache.NewGate(max(4, 2*runtime.GOMAXPROCS(0))), writeTimeout)

	s := &Server{
		srv: &http.Server{
			Handler:           root,
			ReadHeaderTimeout: orDefault(opts.ReadHeaderTimeout, DefaultReadHeaderTimeout),
			ReadTimeout:       orDefault(opts.ReadTimeout, DefaultReadTimeout),
			WriteTimeout:      writeTimeout,
			IdleTimeout:       orDefault(opts.IdleTimeout, DefaultIdleTimeout),
			MaxHeaderBytes:    orDefault(opts.MaxHeaderBytes, DefaultMaxHeaderBytes),
			ConnState:         l.connState,
			ConnContext:       l.connContext,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
		ln:   l,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
			logger.Error("httpserver stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return s, nil
}

// ListenAddr is the address Start listens on for addr: a missing host means
// 127.0.0.1 (":9090" does not expose metrics to the network; say
// "0.0.0.0:9090" for that), and an empty addr 127.0.0.1 with a free port.
// tapes-host applies the same rule to its -http flag, except that there
// an empty -http turns the server off.
func ListenAddr(addr string) (string, error) {
	if addr == "" {
		return "127.0.0.1:0", nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("httpserver: address %q: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// Addr returns the address the server listens on, with the real port when
// Start was given port 0.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL returns "http://" + Addr().
func (s *Server) URL() string { return "http://" + s.Addr() }

// MaxConns returns the connection cap in force (after the file-descriptor
// limit, which it follows within a second), or 0 when there is none.
func (s *Server) MaxConns() int { return int(s.ln.max.Load()) }

// Shutdown stops accepting connections and waits, until ctx ends, for the
// requests in progress.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err == nil {
		<-s.done
		err = s.err
	}
	return err
}

// Close stops the server at once, dropping requests in progress.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}
