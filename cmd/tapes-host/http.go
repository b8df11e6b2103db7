package main

import (
	"fmt"
	"sync"

	"github.com/tapes-go/tapes/reporters/httpserver"
)

// serveHTTP serves /metrics and /stats through httpserver, the hardened
// server library users get too: timeouts on every phase of a connection, a
// connection cap that evicts the longest-waiting connection instead of
// refusing scrapers, and one shared rendering per -http-cache period
// however many clients scrape. Its own numbers go to tapes.host.http.*.
func (h *host) serveHTTP() error {
	c := h.cfg
	popts := c.prom.options()
	popts.Namespace = c.namespace
	popts.Mapper = c.mapper
	popts.OnSkip = h.promSkips().skip
	srv, err := httpserver.Start(c.httpAddr, h.reg, httpserver.Options{
		Prometheus: popts,
		Logger:     h.log,
		// Push reporters see numbers every -interval; a scrape need not
		// be fresher than that, nor older.
		MaxAge:            min(c.httpCache, c.interval),
		ReadHeaderTimeout: c.httpReadHeaderTimeout,
		ReadTimeout:       c.httpReadTimeout,
		WriteTimeout:      c.httpWriteTimeout,
		IdleTimeout:       c.httpIdleTimeout,
		MaxHeaderBytes:    c.httpMaxHeaderBytes,
		MaxConns:          c.httpMaxConns,
		MetricsPrefix:     selfPrefix + ".http",
		Handlers:          h.health.routes(),
	})
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	h.http, h.httpAddr = srv, srv.Addr()
	if srv.MaxConns() < c.httpMaxConns {
		h.log.Warn("http: connection cap lowered to keep file descriptors for the rest of the host",
			"max_conns", srv.MaxConns(), "asked", c.httpMaxConns)
	}
	return nil
}

// promSkipped is the self-metric counting the metrics /metrics leaves out.
const promSkipped = selfPrefix + ".prometheus.skipped"

// skips tracks the metrics left out of /metrics (a name that cannot be
// expressed, or whose series collide with another's after mapping), so
// that none vanishes silently: each is logged once, at Warn through the
// host's logger (so -log-level applies), and tapes.host.prometheus.skipped
// counts the distinct names left out since start. The set is bounded by
// the registry's -max-metrics.
type skips struct {
	h    *host
	mu   sync.Mutex
	seen map[string]struct{}
}

func (h *host) promSkips() *skips {
	s := &skips{h: h, seen: map[string]struct{}{}}
	h.reg.Gauge(promSkipped, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.seen))
	})
	return s
}

// skip is called per render for every metric left out.
func (s *skips) skip(name string, err error) {
	s.mu.Lock()
	_, old := s.seen[name]
	if !old {
		s.seen[name] = struct{}{}
	}
	s.mu.Unlock()
	if !old {
		s.h.log.Warn("prometheus: metric left out of /metrics", "metric", name, "err", err)
	}
}
