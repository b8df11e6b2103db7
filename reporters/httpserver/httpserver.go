// Package httpserver is a standalone HTTP server for a registry, tapes'
// HTTPReporter(port) for programs without an HTTP stack of their own:
//
//	srv, err := httpserver.Start(":8080", reg, httpserver.Options{})
//	defer srv.Shutdown(ctx)
//
// It serves
//
//	/stats    the stats tree as JSON (package httpjson)
//	/metrics  the Prometheus text format (package prometheus)
//
// It binds to 127.0.0.1 unless told otherwise: an address without a host
// (":8080", "") means 127.0.0.1, because metrics often reveal more than a
// service should publish. Binding to all interfaces is explicit:
// "0.0.0.0:8080" or "[::]:8080".
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/httpjson"
	"github.com/tapes-go/tapes/reporters/prometheus"
)

// Options configures a Server. The zero value is ready to use.
type Options struct {
	// Prometheus configures /metrics.
	Prometheus prometheus.Options
	// Logger receives the HTTP server's errors; nil means slog.Default().
	Logger *slog.Logger
}

// Server serves one registry until Shutdown or Close.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
	err  error // from Serve, read after done is closed
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
	ln, err := net.Listen("tcp", laddr)
	if err != nil {
		return nil, fmt.Errorf("httpserver: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	mux := http.NewServeMux()
	mux.Handle("/stats", httpjson.Handler(r))
	mux.Handle("/metrics", prometheus.Handler(r, opts.Prometheus))
	s := &Server{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
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
