package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters"
	"github.com/tapes-go/tapes/reporters/httpserver"
	"github.com/tapes-go/tapes/reporters/statsd"
	"github.com/tapes-go/tapes/reporters/stream"
	"github.com/tapes-go/tapes/runtimemetrics"
	"github.com/tapes-go/tapes/shm"
	shmhost "github.com/tapes-go/tapes/shm/host"

	// The drain waits for workers in a thread of its own (cgo builds),
	// a fraction of the CPU per wake-up (docs/RATIONALE.md, "Polling
	// without burning a core").
	_ "github.com/tapes-go/tapes/shm/relay"
)

// selfPrefix is where the host reports on itself.
const selfPrefix = "tapes.host"

// host is one running tapes-host: the registry and everything feeding and
// reading it. Data flows one way: shm rings and plugins -> registry ->
// reporters.
type host struct {
	cfg *config
	log *slog.Logger
	out io.Writer
	reg *registry.Registry

	shm     *shmhost.Host
	drainWG sync.WaitGroup
	stopDrn context.CancelFunc
	// drainDead is closed when the drain loop stops on its own: the shm
	// file was damaged (drainErr says how). The host must then exit
	// non-zero rather than keep serving numbers that no longer move.
	drainDead chan struct{}
	drainErr  error

	http     *httpserver.Server
	httpAddr string

	plugins   []*pluginSup
	pluginsWG sync.WaitGroup
	stopPlg   context.CancelFunc

	push     []*reporters.Scheduler
	pushReps []pushRep // what each of push runs, to restart it on reload
	pushCtx  context.Context
	closers  []io.Closer // sinks to close after the last report
	remote   *remotePush // push.go: remote write and OTLP

	health  *health             // health.go
	runtime *runtimemetrics.Set // tapes.host.go.*, tapes.host.process.*
}

// wallClock reads time.Now.
type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// startHost opens the shm file and starts draining, serving, plugins and
// push reporters. The caller must call shutdown.
func startHost(ctx context.Context, cfg *config, log *slog.Logger, out io.Writer) (h *host, err error) {
	h = &host{cfg: cfg, log: log, out: out, health: newHealth()}
	// A precise clock, not the registry's default coarse one: the coarse
	// clock's goroutine ticks 100 times a second for 10 s after each
	// read, and the runtime metrics' timers, sampled every 10 s, read it
	// often enough to keep it ticking for good, the largest part of a
	// lightly loaded host's CPU (docs/RATIONALE.md, "Polling without
	// burning a core"). The host applies records in batches, one clock
	// read per metric and pass.
	h.reg = registry.New(registry.WithMaxMetrics(cfg.maxMetrics), registry.WithClock(wallClock{}))
	start := time.Now()
	h.reg.Gauge(selfPrefix+".uptime_seconds", func() float64 { return time.Since(start).Seconds() })
	defer func() {
		if err != nil {
			h.shutdown()
		}
	}()
	if err := h.registerOps(); err != nil {
		return h, err
	}

	// shm errors say "shm: ..." themselves.
	scfg := shmhost.Config{Slots: cfg.slots, RingRecords: cfg.ringRecords, Prefix: selfPrefix + ".shm", Logger: log, Registry: h.reg, CoalesceWindow: cfg.shmWindow}
	if cfg.shmMemfd {
		if h.shm, err = shmhost.CreateMemfd(scfg); err != nil {
			return h, err
		}
	} else {
		path := cfg.shmPath
		if path == "" {
			if path, err = shm.DefaultPath(); err != nil {
				return h, err
			}
		}
		if h.shm, err = shmhost.Create(path, scfg); err != nil {
			return h, err
		}
	}
	h.health.shmOpened(h.shm.Path(), h.shm.Passes)
	dctx, cancel := context.WithCancel(context.Background())
	h.stopDrn = cancel
	h.drainDead = make(chan struct{})
	h.drainWG.Add(1)
	go func() {
		defer h.drainWG.Done()
		err := h.shm.Drain(dctx)
		if err != nil && dctx.Err() == nil {
			h.drainErr = err
			log.Error("shm drain stopped; tapes-host exits non-zero so that its supervisor restarts it", "err", err)
			close(h.drainDead)
		} else {
			err = nil
		}
		h.health.drainStopped(err)
	}()
	fmt.Fprintf(out, "shm file: %s\n%s=%s\n", h.shm.Path(), shm.EnvVar, h.shm.Path())

	if cfg.httpAddr != "" {
		if err := h.serveHTTP(); err != nil {
			return h, err
		}
		fmt.Fprintf(out, "metrics: http://%s/metrics  stats: http://%s/stats\n", h.httpAddr, h.httpAddr)
	}

	if err := h.startPlugins(ctx); err != nil {
		return h, err
	}
	if err := h.startPush(ctx); err != nil {
		return h, err
	}
	// Ready once every plugin's process has loaded its module; a plugin
	// that never loads keeps the host unready (its errors say why).
	sups := h.plugins
	go func() {
		for _, s := range sups {
			<-s.loaded
		}
		h.health.pluginsLoaded()
	}()
	return h, nil
}

func (h *host) startPush(ctx context.Context) error {
	if h.cfg.stream != "" {
		var w io.Writer = h.out
		if h.cfg.stream != "-" {
			f, err := os.OpenFile(h.cfg.stream, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				return fmt.Errorf("stream: %w", err)
			}
			h.closers = append(h.closers, f)
			w = f
		}
		h.startPushReporter(ctx, stream.New(h.reg, w), "stream")
	}
	if h.cfg.statsdAddr != "" {
		rep, err := statsd.New(h.cfg.statsdAddr, h.reg, statsd.Options{Prefix: h.cfg.statsdPrefix})
		if err != nil {
			return fmt.Errorf("statsd: %w", err)
		}
		h.closers = append(h.closers, rep)
		h.startPushReporter(ctx, rep, "statsd")
	}
	return h.startRemotePush(ctx)
}

// shutdown stops in the order that loses nothing: stop plugins (their
// processes, within a short grace), stop accepting HTTP, stop the drain
// loop and drain what is left, then let every push reporter run one last
// time.
func (h *host) shutdown() {
	h.health.stop()
	h.stopPlugins()
	if h.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := h.http.Shutdown(ctx); err != nil {
			// Requests still running after the grace period (slow
			// readers) must not hold up the final drain.
			_ = h.http.Close()
		}
		cancel()
	}
	if h.stopDrn != nil {
		h.stopDrn()
		h.drainWG.Wait()
	}
	// After damage there is nothing trustworthy left to drain; the last
	// report below carries tapes.host.shm.damaged, and the exit code says
	// the rest.
	if h.shm != nil && h.drainErr == nil {
		if _, err := h.shm.DrainOnce(); err != nil {
			h.log.Error("final drain", "err", err)
		}
	}
	for _, s := range h.push {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.StopAndFlush(ctx); err != nil {
			h.log.Error("last report", "err", err)
		}
		cancel()
	}
	h.closePlugins()
	for _, c := range h.closers {
		_ = c.Close()
	}
	if h.runtime != nil {
		h.runtime.Stop()
	}
	if h.shm != nil {
		_ = h.shm.Close()
	}
}
