// Command workers is the service of examples/single run as several worker
// processes that share one port, the way gunicorn or uWSGI run a Python
// service: tapes-host starts the workers, each records through its own ring
// of a shared-memory file (package shm), and tapes-host serves the combined
// numbers. The workers serve only the application.
//
//	go build -o /tmp/tapes-host ./cmd/tapes-host
//	go build -o /tmp/workers ./examples/workers
//	/tmp/tapes-host run -workers 2 -- /tmp/workers -addr 127.0.0.1:8080
//	curl http://127.0.0.1:8080/            # answered by either worker
//	curl http://127.0.0.1:8889/stats       # totals over both workers
//
// Run by hand, a worker needs TAPES_SHM, which tapes-host prints at start.
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
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapes-go/tapes"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/tapeshttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address, shared by every worker")
	flag.Parse()
	log.SetPrefix(fmt.Sprintf("worker %s (pid %d): ", os.Getenv("TAPES_WORKER"), os.Getpid()))
	log.SetFlags(0)

	c, err := shm.OpenEnv()
	if err != nil {
		log.Fatalf("%v (start workers with: tapes-host run -workers N -- %s)", err, os.Args[0])
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := listenShared(ctx, *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: routes(c), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("listening on http://%s", ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	// Close flushes what this worker recorded and releases its slot; the
	// host drains the rest after the worker exits.
	if err := c.Close(); err != nil {
		log.Fatal(err)
	}
}

// listenShared listens with SO_REUSEPORT, so every worker binds the same
// address and the kernel spreads new connections over them.
func listenShared(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(ctx, "tcp", addr)
}

// routes builds the service over any tapes.Recorder: the shm client here,
// the registry in a single process, with the same code. The tapeshttp
// middleware records http.<route>.latency, http.<route>.status.<class> and
// http.<route>.errors (5xx answers) through it.
func routes(rec tapes.Recorder) *http.ServeMux {
	var inflight atomic.Int64
	// A gauge across processes: each worker reports its own value and the
	// host sums them (the shm default), so http.inflight is the total.
	rec.Gauge("http.inflight", func() float64 { return float64(inflight.Load()) })
	m, err := tapeshttp.New(rec, tapeshttp.Options{Errors: "http.{route}.errors"})
	if err != nil {
		panic(err) // the templates are constants
	}
	timed := func(route string, h http.HandlerFunc) http.Handler {
		return m.MustHandler(route, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inflight.Add(1)
			defer inflight.Add(-1)
			h(w, r)
		}))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", timed("index", index))
	mux.Handle("GET /users/{id}", timed("users", user))
	mux.Handle("GET /fail", timed("fail", fail))
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
	fmt.Fprintf(w, "user %d (served by pid %d)\n", id, os.Getpid())
}

func fail(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "something broke", http.StatusInternalServerError)
}
