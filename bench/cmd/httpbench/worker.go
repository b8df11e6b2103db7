package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cactus/go-statsd-client/v5/statsd"
	"github.com/go-zeromq/zmq4"
	"golang.org/x/sys/unix"
)

// workerConfig is what a worker variant may need to reach its sink.
type workerConfig struct {
	statsd string // StatsD UDP address
	zmq    string // ZeroMQ endpoint of the aggregator's SUB socket
}

// workerVariant sets up one way of getting a worker's metrics out. The
// returned closer flushes and releases what the variant holds.
type workerVariant func(ctx context.Context, cfg workerConfig) (middleware, func() (uint64, error), io.Closer, error)

// workerVariants is filled by the files that implement them, so that each
// variant's dependencies stay in its own file.
var workerVariants = map[string]workerVariant{
	"none": func(context.Context, workerConfig) (middleware, func() (uint64, error), io.Closer, error) {
		return func(_ string, h http.HandlerFunc) http.HandlerFunc { return h },
			func() (uint64, error) { return 0, nil }, io.NopCloser(nil), nil
	},
	"statsd": statsdWorker,
	"zmq":    zmqWorker,
}

// workerMain runs one worker process of the multi-process benchmark: it
// shares -addr with its siblings through SO_REUSEPORT, as gunicorn-style
// pre-forked workers share one port.
func workerMain(ctx context.Context, args []string) error {
	fs := newFlags("worker")
	variant := fs.String("variant", "none", "one of: "+variantNames())
	addr := fs.String("addr", "", "shared listen address (SO_REUSEPORT)")
	var cfg workerConfig
	fs.StringVar(&cfg.statsd, "statsd", "", "StatsD address (variant statsd)")
	fs.StringVar(&cfg.zmq, "zmq", "", "aggregator endpoint, tcp://HOST:PORT (variant zmq)")
	_ = fs.Parse(args)
	v, ok := workerVariants[*variant]
	if !ok {
		return fmt.Errorf("unknown worker variant %q (%s)", *variant, variantNames())
	}
	if *addr == "" {
		return fmt.Errorf("worker needs -addr")
	}
	mw, count, closer, err := v(ctx, cfg)
	if err != nil {
		return err
	}
	ln, err := listenReusePort(ctx, *addr)
	if err != nil {
		return err
	}
	err = serveUntil(ctx, ln, mux(mw, count))
	if cerr := closer.Close(); err == nil {
		err = cerr
	}
	return err
}

func variantNames() string {
	var s []string
	for k := range workerVariants {
		s = append(s, k)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// listenReusePort listens on addr with SO_REUSEPORT, so that several
// processes accept on one port and the kernel spreads connections over them.
func listenReusePort(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(ctx, "tcp", addr)
}

// statsdWorker sends one StatsD timing packet per request through
// go-statsd-client's unbuffered client: what a service does when each
// worker reports straight to a StatsD daemon.
func statsdWorker(_ context.Context, cfg workerConfig) (middleware, func() (uint64, error), io.Closer, error) {
	if cfg.statsd == "" {
		return nil, nil, nil, fmt.Errorf("variant statsd needs -statsd")
	}
	c, err := statsd.NewClientWithConfig(&statsd.ClientConfig{Address: cfg.statsd, Prefix: "bench"})
	if err != nil {
		return nil, nil, nil, err
	}
	var sent atomic.Uint64
	return func(route string, h http.HandlerFunc) http.HandlerFunc {
		name := "http." + route + ".latency"
		return func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			h(w, r)
			if c.TimingDuration(name, time.Since(start), 1) == nil {
				sent.Add(1)
			}
		}
	}, func() (uint64, error) { return sent.Load(), nil }, c, nil
}

// zmqWorker publishes one message per request on a ZeroMQ PUB socket
// connected to the aggregator's SUB socket: the original tapes design for
// pre-forked workers.
func zmqWorker(ctx context.Context, cfg workerConfig) (middleware, func() (uint64, error), io.Closer, error) {
	if cfg.zmq == "" {
		return nil, nil, nil, fmt.Errorf("variant zmq needs -zmq")
	}
	pub := zmq4.NewPub(ctx)
	if err := pub.Dial(cfg.zmq); err != nil {
		pub.Close()
		return nil, nil, nil, fmt.Errorf("zmq dial %s: %w", cfg.zmq, err)
	}
	// PUB drops messages for peers whose subscription has not arrived yet
	// (ZeroMQ's slow joiner); wait for it so no request goes uncounted.
	deadline := time.Now().Add(10 * time.Second)
	for len(pub.(zmq4.Topics).Topics()) == 0 {
		if time.Now().After(deadline) {
			pub.Close()
			return nil, nil, nil, fmt.Errorf("zmq: no subscription from %s after 10s", cfg.zmq)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var sent atomic.Uint64
	return func(route string, h http.HandlerFunc) http.HandlerFunc {
		name := "http." + route + ".latency"
		return func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			h(w, r)
			if pub.Send(zmq4.NewMsg(encodeTiming(name, time.Since(start)))) == nil {
				sent.Add(1)
			}
		}
	}, func() (uint64, error) { return sent.Load(), nil }, pub, nil
}

// encodeTiming is the ZeroMQ message body: the metric name, a zero byte and
// the duration in nanoseconds, big-endian. A fresh slice per message, since
// the PUB socket queues it.
func encodeTiming(name string, d time.Duration) []byte {
	b := make([]byte, len(name)+9)
	copy(b, name)
	binary.BigEndian.PutUint64(b[len(name)+1:], uint64(d))
	return b
}

func decodeTiming(b []byte) (string, time.Duration, error) {
	if len(b) < 10 || b[len(b)-9] != 0 {
		return "", 0, fmt.Errorf("bad timing message of %d bytes", len(b))
	}
	return string(b[:len(b)-9]), time.Duration(binary.BigEndian.Uint64(b[len(b)-8:])), nil
}
