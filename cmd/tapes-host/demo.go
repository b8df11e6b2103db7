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
	var duration time.Duration
	// parse is also what a SIGHUP re-runs: it must make the same
	// adjustments, or the demo's own plugin would read as a changed setting.
	parse := func(out io.Writer) (*flag.FlagSet, *config, []string, error) {
		cfg := &config{}
		fs := newFlagSet("tapes-host demo", cfg, out)
		sc := addSuperviseFlags(fs)
		cfg.supervise = sc
		fs.DurationVar(&duration, "duration", 0, "stop by itself after this long (0: run until Ctrl-C)")
		// The demo's workers are this binary, which exists: validate needs
		// an argv.
		rest, err := parseFlags(fs, cfg, args, out, demoUsage)
		if err != nil {
			return fs, cfg, rest, err
		}
		if len(rest) > 0 {
			return fs, cfg, rest, usageError{errUnexpectedArgs(rest)}
		}
		if err := sc.validate([]string{self}); err != nil {
			return fs, cfg, rest, usageError{err}
		}
		if duration < 0 {
			return fs, cfg, rest, usageError{fmt.Errorf("-duration %v: must not be negative", duration)}
		}
		if sc.workers == 1 && !flagSet(fs, "workers") {
			sc.workers = 2
		}
		if err := fs.Set("plugin", wasm+"=plugins.example"); err != nil {
			return fs, cfg, rest, err
		}
		if !flagSet(fs, "plugin-interval") {
			cfg.pluginInterval = time.Second
		}
		return fs, cfg, rest, nil
	}
	fs, cfg, _, err := parse(stderr)
	if err != nil {
		return err
	}
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	sc := cfg.supervise
	fmt.Fprintf(stdout, "tapes demo: %d workers (%s %s) and the example C plugin\n", sc.workers, self, demoWorkerCmd)
	return supervise(ctx, fs, cfg, sc, []string{self, demoWorkerCmd}, parse, stdout, stderr)
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
