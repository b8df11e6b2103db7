package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"

	"github.com/go-zeromq/zmq4"

	"github.com/tapes-go/tapes/registry"
)

// statsdSinkMain counts the StatsD timing lines that arrive on a UDP port;
// it stands in for the StatsD daemon, whose own cost is not what the
// benchmark compares (the workers' cost of sending is).
func statsdSinkMain(ctx context.Context, args []string) error {
	fs := newFlags("statsd-sink")
	addr := fs.String("addr", "127.0.0.1:0", "UDP listen address")
	httpAddr := fs.String("http", "127.0.0.1:0", "serves GET /count")
	_ = fs.Parse(args)
	pc, err := net.ListenPacket("udp", *addr)
	if err != nil {
		return err
	}
	defer pc.Close()
	// A deep socket buffer keeps bursts from being dropped by the kernel
	// before this loop reads them.
	_ = pc.(*net.UDPConn).SetReadBuffer(8 << 20)
	var timings, bad atomic.Uint64
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			for line := range bytes.SplitSeq(buf[:n], []byte("\n")) {
				switch {
				case len(line) == 0:
				case bytes.HasSuffix(line, []byte("|ms")):
					timings.Add(1)
				default:
					bad.Add(1)
				}
			}
		}
	}()
	go func() {
		<-ctx.Done()
		pc.Close()
	}()
	fmt.Printf("udp %s\n", pc.LocalAddr())
	return serveControl(ctx, *httpAddr, func() (uint64, error) {
		if b := bad.Load(); b > 0 {
			return 0, fmt.Errorf("%d lines that are not StatsD timings", b)
		}
		return timings.Load(), nil
	})
}

// zmqAggMain is the aggregator of the original tapes design: it binds a SUB
// socket, and every worker's PUB socket connects to it; each message is one
// timing, applied to a registry.
func zmqAggMain(ctx context.Context, args []string) error {
	fs := newFlags("zmq-agg")
	addr := fs.String("addr", "tcp://127.0.0.1:0", "SUB endpoint to bind")
	httpAddr := fs.String("http", "127.0.0.1:0", "serves GET /count")
	_ = fs.Parse(args)
	sub := zmq4.NewSub(ctx)
	defer sub.Close()
	if err := sub.Listen(*addr); err != nil {
		return err
	}
	if err := sub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
		return err
	}
	reg := registry.New()
	var bad atomic.Uint64
	go func() {
		for {
			msg, err := sub.Recv()
			if err != nil {
				return
			}
			for _, f := range msg.Frames {
				name, d, err := decodeTiming(f)
				if err != nil {
					bad.Add(1)
					continue
				}
				reg.Timer(name).Update(d)
			}
		}
	}()
	fmt.Printf("zmq tcp://%s\n", sub.Addr())
	return serveControl(ctx, *httpAddr, func() (uint64, error) {
		if b := bad.Load(); b > 0 {
			return 0, fmt.Errorf("%d malformed messages", b)
		}
		var n uint64
		reg.Each(func(_ string, m registry.Metric) {
			if t, ok := m.(*registry.Timer); ok {
				n += t.Count()
			}
		})
		return n, nil
	})
}

// serveControl serves GET /count on addr until ctx ends.
func serveControl(ctx context.Context, addr string, count func() (uint64, error)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	m := http.NewServeMux()
	m.HandleFunc("GET /count", func(w http.ResponseWriter, _ *http.Request) {
		n, err := count()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%d\n", n)
	})
	err = serveUntil(ctx, ln, m)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "control server:", err)
	}
	return err
}
