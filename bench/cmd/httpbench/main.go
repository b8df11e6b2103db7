// Command httpbench holds the processes of the HTTP benchmarks in
// bench/http_test.go: servers that answer "finished" with or without
// metrics, the worker processes of the multi-process runs, and the sinks
// those workers report to. Every process prints "ready ADDR" on stdout once
// it serves, serves GET /count (how many requests its metrics recorded, read
// back from the metrics library itself, so a broken variant cannot pass the
// smoke test) and exits cleanly on SIGTERM.
//
//	httpbench serve  -variant none|tapes|gometrics|prometheus [-addr A]
//	httpbench worker -variant none|tapes|statsd|zmq -addr A [-statsd A] [-zmq tcp://A]
//	httpbench statsd-sink [-addr A] [-http A]
//	httpbench zmq-agg [-addr tcp://A] [-http A]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: httpbench serve|worker|statsd-sink|zmq-agg [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		err = serveMain(ctx, args)
	case "worker":
		err = workerMain(ctx, args)
	case "statsd-sink":
		err = statsdSinkMain(ctx, args)
	case "zmq-agg":
		err = zmqAggMain(ctx, args)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpbench:", err)
		os.Exit(1)
	}
}

// finished is the handler every variant times: the original benchmark's
// "return 'finished'".
func finished(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("finished"))
}

// middleware times one route; the variants differ only in their middleware.
type middleware func(route string, h http.HandlerFunc) http.HandlerFunc

// mux builds the benchmarked routes with mw, and /count reporting count().
func mux(mw middleware, count func() (uint64, error)) *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", mw("index", finished))
	m.HandleFunc("GET /users", mw("users", finished))
	m.HandleFunc("GET /count", func(w http.ResponseWriter, _ *http.Request) {
		n, err := count()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%d\n", n)
	})
	return m
}

// serveUntil serves h on ln until ctx ends, then shuts down gracefully.
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("ready %s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func newFlags(name string) *flag.FlagSet {
	return flag.NewFlagSet("httpbench "+name, flag.ExitOnError)
}
