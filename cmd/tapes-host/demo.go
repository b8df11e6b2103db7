package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tapes-go/tapes"
	pluginc "github.com/tapes-go/tapes/examples/plugin-c"
	"github.com/tapes-go/tapes/shm"
)

// demoWorkerCmd is the hidden subcommand the demo re-executes itself with to
// get real worker processes without needing a second binary.
const demoWorkerCmd = "demo-worker"

const demoUsage = `Usage: tapes-host demo [flags]

Runs tapes-host end to end on its default settings: the host, 2 worker
processes recording synthetic HTTP traffic through the shm file, and the
example C plugin (examples/plugin-c) as a collector. Open the printed URLs;
stop with Ctrl-C (or -duration).

Flags:
`

func demoMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := &config{}
	fs := newFlagSet("tapes-host demo", cfg, stderr)
	sc := addSuperviseFlags(fs)
	duration := fs.Duration("duration", 0, "stop by itself after this long (0: run until Ctrl-C)")
	rest, err := parseFlags(fs, cfg, args, stderr, demoUsage)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{errUnexpectedArgs(rest)}
	}
	if sc.workers == 1 && !flagSet(fs, "workers") {
		sc.workers = 2
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tapes-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	wasm := filepath.Join(dir, "plugin-c.wasm")
	if err := os.WriteFile(wasm, pluginc.Wasm, 0o600); err != nil {
		return err
	}
	if err := cfg.plugins.Set(wasm + "=plugins.example"); err != nil {
		return err
	}
	if !flagSet(fs, "plugin-interval") {
		cfg.pluginInterval = time.Second
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	fmt.Fprintf(stdout, "tapes demo: %d workers (%s %s) and the example C plugin\n", sc.workers, self, demoWorkerCmd)
	return supervise(ctx, cfg, sc, []string{self, demoWorkerCmd}, stdout, stderr)
}

// flagSet reports whether the command line (or config file) set name.
func flagSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// demoWorkerMain records synthetic traffic until SIGTERM: a request timer
// per route, request and error counters, a job meter, a payload histogram
// and a queue-depth gauge summed across workers.
func demoWorkerMain(ctx context.Context, args []string) error {
	c, err := shm.OpenEnv()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	routes := []string{"index", "users", "login"}
	timers := make([]tapes.TimerHandle, len(routes))
	for i, route := range routes {
		timers[i] = c.Timer("demo.http." + route + ".latency")
	}
	r := rand.New(rand.NewPCG(uint64(os.Getpid()), 1))
	requests := c.Counter("demo.http.requests")
	errs := c.Counter("demo.http.errors")
	jobs := c.Meter("demo.jobs")
	payload := c.Histogram("demo.http.payload_bytes")
	queue := c.Gauge("demo.queue.depth", nil)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		lat := time.Duration(math.Exp(r.NormFloat64()*0.6+math.Log(0.004)) * float64(time.Second))
		timers[r.IntN(len(timers))].Update(lat)
		requests.Inc()
		if r.IntN(50) == 0 {
			errs.Inc()
		}
		jobs.Mark(int64(r.IntN(3)))
		payload.Update(float64(200 + r.IntN(4000)))
		queue.Set(float64(r.IntN(10)))
	}
}
