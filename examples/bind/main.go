// Command bind gives every handler type its own metrics without repeating
// their names, the Go form of the metered_meta example of the original
// tapes (a metaclass that added per-class timers to Tornado handlers): each
// handler declares tagged metric fields, and tapes.Bind fills them, with
// "{}" standing for the handler's type name.
//
//	go run ./examples/bind -addr 127.0.0.1:8081
//	curl http://127.0.0.1:8081/users     # http.UsersHandler.latency
//	curl http://127.0.0.1:8081/orders    # http.OrdersHandler.latency
//	curl http://127.0.0.1:8081/stats
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
	"syscall"
	"time"

	"github.com/tapes-go/tapes"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/httpjson"
	"github.com/tapes-go/tapes/reporters/prometheus"
)

// UsersHandler lists users. Its metrics are http.UsersHandler.latency,
// .requests and .response_bytes.
type UsersHandler struct {
	Latency  *registry.Timer     `tapes:"http.{}.latency"`
	Requests *registry.Meter     `tapes:"http.{}.requests"`
	Bytes    *registry.Histogram `tapes:"http.{}.response_bytes"`
}

func (h *UsersHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer h.Latency.Time().Stop()
	h.Requests.Mark(1)
	n, _ := fmt.Fprintln(w, `["ada","grace","linus"]`)
	h.Bytes.Update(float64(n))
}

// OrdersHandler takes orders; a request without ?item= is an error,
// counted in http.OrdersHandler.errors.
type OrdersHandler struct {
	Latency  *registry.Timer     `tapes:"http.{}.latency"`
	Requests *registry.Meter     `tapes:"http.{}.requests"`
	Bytes    *registry.Histogram `tapes:"http.{}.response_bytes"`
	Errors   *registry.Counter   `tapes:"http.{}.errors"`
}

func (h *OrdersHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer h.Latency.Time().Stop()
	h.Requests.Mark(1)
	item := r.URL.Query().Get("item")
	if item == "" {
		h.Errors.Inc()
		http.Error(w, "missing ?item=", http.StatusBadRequest)
		return
	}
	n, _ := fmt.Fprintf(w, "ordered %s\n", item)
	h.Bytes.Update(float64(n))
}

// mount binds h's metrics and routes pattern to it. Bind fails, and the
// service refuses to start, if a tag names an invalid metric or a field has
// the wrong type.
func mount(mux *http.ServeMux, pattern string, h http.Handler) error {
	if err := tapes.Bind(h); err != nil {
		return err
	}
	mux.Handle(pattern, h)
	return nil
}

func routes() (*http.ServeMux, error) {
	mux := http.NewServeMux()
	if err := mount(mux, "GET /users", &UsersHandler{}); err != nil {
		return nil, err
	}
	if err := mount(mux, "GET /orders", &OrdersHandler{}); err != nil {
		return nil, err
	}
	mux.Handle("GET /stats", httpjson.Handler(registry.Default))
	mux.Handle("GET /metrics", prometheus.Handler(registry.Default, prometheus.Options{Namespace: "bind"}))
	return mux, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address (port 0 picks a free port)")
	flag.Parse()
	mux, err := routes()
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
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
