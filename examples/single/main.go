// Command single is a net/http service timed by tapes, the Go form of the
// Flask and Tornado examples of the original tapes: every route gets a
// timer and an error counter through one middleware, and the same server
// serves the numbers as JSON (/stats) and as Prometheus text (/metrics).
//
//	go run ./examples/single -addr 127.0.0.1:8080
//	curl http://127.0.0.1:8080/            # finished
//	curl http://127.0.0.1:8080/stats       # {"http":{"index":{"latency":{"count":1,...}}}}
//	curl http://127.0.0.1:8080/metrics     # single_http_index_latency_seconds_count 1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/tapes-go/tapes"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/httpjson"
	"github.com/tapes-go/tapes/reporters/prometheus"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address (port 0 picks a free port)")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: routes(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Printf("listening on http://%s (stats: /stats, Prometheus: /metrics)\n", ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// routes builds the service. The application routes go through timed; the
// metrics endpoints do not, so scraping does not show up in the numbers.
func routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", timed("index", http.HandlerFunc(index)))
	mux.Handle("GET /users/{id}", timed("users", http.HandlerFunc(user)))
	mux.Handle("GET /fail", timed("fail", http.HandlerFunc(fail)))
	mux.Handle("GET /stats", httpjson.Handler(registry.Default))
	mux.Handle("GET /metrics", prometheus.Handler(registry.Default, prometheus.Options{Namespace: "single"}))
	return mux
}

// timed is the timing middleware: http.<route>.latency times every request
// and http.<route>.errors counts the answers with a 5xx status. The metrics
// are looked up once, here, not on every request.
func timed(route string, h http.Handler) http.Handler {
	latency := tapes.Timer("http." + route + ".latency")
	errs := tapes.Counter("http." + route + ".errors")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := statusWriter{ResponseWriter: w, status: http.StatusOK}
		defer latency.Time().Stop()
		h.ServeHTTP(&sw, r)
		if sw.status >= 500 {
			errs.Inc()
		}
	})
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func index(w http.ResponseWriter, _ *http.Request) {
	w.Write([]byte("finished"))
}

func user(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		http.Error(w, "bad user id", http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "user %d\n", id)
}

func fail(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "something broke", http.StatusInternalServerError)
}
