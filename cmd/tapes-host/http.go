package main

import (
	"fmt"

	"github.com/tapes-go/tapes/reporters/httpserver"
	"github.com/tapes-go/tapes/reporters/prometheus"
)

// serveHTTP serves /metrics and /stats through httpserver, the hardened
// server library users get too: timeouts on every phase of a connection, a
// connection cap that evicts the longest-waiting connection instead of
// refusing scrapers, and one shared rendering per -http-cache period
// however many clients scrape. Its own numbers go to tapes.host.http.*.
func (h *host) serveHTTP() error {
	c := h.cfg
	srv, err := httpserver.Start(c.httpAddr, h.reg, httpserver.Options{
		Prometheus: prometheus.Options{Namespace: c.namespace},
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
