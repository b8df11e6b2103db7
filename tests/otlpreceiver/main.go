// Command otlpreceiver is the OpenTelemetry Collector's own OTLP receiver
// (go.opentelemetry.io/collector/receiver/otlpreceiver) with a consumer
// that writes every metrics request it accepts as one JSON line
// (pmetric.JSONMarshaler) to -out: the real receiver of the OTLP reporter's
// tests, without a whole Collector distribution (none is installable
// here).
//
// It listens for OTLP/HTTP on a free loopback port (gRPC off), prints
// "listening HOST:PORT" on stdout once ready, and stops on SIGTERM or
// SIGINT. It is a module of its own so that the Collector never becomes a
// dependency of tapes.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configgrpc"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
)

func main() {
	out := flag.String("out", "", "append one JSON line per request here (default stdout)")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "otlpreceiver:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	w := os.Stdout
	if out != "" {
		f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	var mu sync.Mutex
	var marshal pmetric.JSONMarshaler
	next, err := consumer.NewMetrics(func(_ context.Context, md pmetric.Metrics) error {
		b, err := marshal.MarshalMetrics(md)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		_, err = w.Write(append(b, '\n'))
		return err
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	// The receiver takes an address, not a listener: find a free port and
	// retry if another process takes it before the receiver binds it.
	var rcv receiver.Metrics
	var addr string
	for try := 0; ; try++ {
		if addr, err = freeAddr(); err != nil {
			return err
		}
		if rcv, err = start(ctx, addr, next); err == nil {
			break
		}
		if try == 4 {
			return err
		}
	}
	fmt.Printf("listening %s\n", addr)
	<-ctx.Done()
	return rcv.Shutdown(context.Background())
}

func start(ctx context.Context, addr string, next consumer.Metrics) (receiver.Metrics, error) {
	f := otlpreceiver.NewFactory()
	cfg := f.CreateDefaultConfig().(*otlpreceiver.Config)
	cfg.Protocols.GRPC = configoptional.None[configgrpc.ServerConfig]()
	http := cfg.Protocols.HTTP.GetOrInsertDefault()
	http.ServerConfig.NetAddr.Endpoint = addr
	rcv, err := f.CreateMetrics(ctx, receivertest.NewNopSettings(f.Type()), cfg, next)
	if err != nil {
		return nil, err
	}
	if err := rcv.Start(ctx, componenttest.NewNopHost()); err != nil {
		return nil, err
	}
	return rcv, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
