package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	gometrics "github.com/rcrowley/go-metrics"

	"github.com/tapes-go/tapes/registry"
)

// serveMain runs the single-process server of one variant.
func serveMain(ctx context.Context, args []string) error {
	fs := newFlags("serve")
	variant := fs.String("variant", "none", "none, tapes, gometrics or prometheus")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	_ = fs.Parse(args)
	mw, count, err := singleVariant(*variant)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	return serveUntil(ctx, ln, mux(mw, count))
}

// singleVariant returns the timing middleware of a variant and the function
// that reads back how many requests it recorded. Each variant keeps one
// timer per route, looked up once when the route is built, which is how each
// library is meant to be used on a hot path.
func singleVariant(name string) (middleware, func() (uint64, error), error) {
	switch name {
	case "none":
		return func(_ string, h http.HandlerFunc) http.HandlerFunc { return h },
			func() (uint64, error) { return 0, nil }, nil

	case "tapes":
		r := registry.New()
		return func(route string, h http.HandlerFunc) http.HandlerFunc {
				t := r.Timer("http." + route + ".latency")
				return func(w http.ResponseWriter, req *http.Request) {
					defer t.Time().Stop()
					h(w, req)
				}
			}, func() (uint64, error) {
				var n uint64
				r.Each(func(_ string, m registry.Metric) {
					if t, ok := m.(*registry.Timer); ok {
						n += t.Count()
					}
				})
				return n, nil
			}, nil

	case "gometrics":
		r := gometrics.NewRegistry()
		return func(route string, h http.HandlerFunc) http.HandlerFunc {
				t := gometrics.NewTimer()
				if err := r.Register("http."+route+".latency", t); err != nil {
					panic(err)
				}
				return func(w http.ResponseWriter, req *http.Request) {
					start := time.Now()
					h(w, req)
					t.UpdateSince(start)
				}
			}, func() (uint64, error) {
				var n uint64
				r.Each(func(_ string, m any) {
					if t, ok := m.(gometrics.Timer); ok {
						n += uint64(t.Count())
					}
				})
				return n, nil
			}, nil

	case "prometheus":
		reg := prometheus.NewRegistry()
		hv := prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_request_duration_seconds",
			Help:    "Time to serve a request.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"})
		reg.MustRegister(hv)
		return func(route string, h http.HandlerFunc) http.HandlerFunc {
				o := hv.WithLabelValues(route)
				return func(w http.ResponseWriter, req *http.Request) {
					start := time.Now()
					h(w, req)
					o.Observe(time.Since(start).Seconds())
				}
			}, func() (uint64, error) {
				mfs, err := reg.Gather()
				if err != nil {
					return 0, err
				}
				var n uint64
				for _, mf := range mfs {
					for _, m := range mf.GetMetric() {
						n += histCount(m)
					}
				}
				return n, nil
			}, nil
	}
	return nil, nil, fmt.Errorf("unknown single-process variant %q (none, tapes, gometrics, prometheus)", name)
}

func histCount(m *dto.Metric) uint64 { return m.GetHistogram().GetSampleCount() }
