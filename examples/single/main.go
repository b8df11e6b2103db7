// Command single is a net/http service timed by tapes, the Go form of the
// Flask and Tornado examples of the original tapes: every route gets a
// timer, status counters and an error counter through one middleware
// (package tapeshttp), and the same server serves the numbers as JSON
// (/stats) and as Prometheus text (/metrics).
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
	"github.com/tapes-go/tapes/tapeshttp"
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

// routes builds the service. The application routes go through the
// tapeshttp middleware: http.<route>.latency times every request,
// http.<route>.status.<class> counts the answers by status class and
// http.<route>.errors counts those with a 5xx status. The metrics
// endpoints are not instrumented, so scraping does not show up in the
// numbers.
func routes() *http.ServeMux {
	m, err := tapeshttp.New(tapes.Default(), tapeshttp.Options{Errors: "http.{route}.errors"})
	if err != nil {
		panic(err) // the templates are constants
	}
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", m.MustHandler("index", http.HandlerFunc(index)))
	mux.Handle("GET /users/{id}", m.MustHandler("users", http.HandlerFunc(user)))
	mux.Handle("GET /fail", m.MustHandler("fail", http.HandlerFunc(fail)))
	mux.Handle("GET /stats", httpjson.Handler(registry.Default))
	mux.Handle("GET /metrics", prometheus.Handler(registry.Default, prometheus.Options{Namespace: "single"}))
	return mux
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
