package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func serveMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	parse := func(out io.Writer) (*flag.FlagSet, *config, []string, error) {
		c := &config{}
		fs := newFlagSet("tapes-host", c, out)
		rest, err := parseFlags(fs, c, args, out, usageHeader)
		return fs, c, rest, err
	}
	fs, cfg, rest, err := parse(stderr)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{errUnexpectedArgs(rest)}
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := notifyHUP()
	defer signal.Stop(hup)
	h, err := startHost(ctx, cfg, log, stdout)
	if err != nil {
		return err
	}
	rl := &reloader{log: log, cur: fs, cfg: cfg, h: h, parse: parse}
	log.Info("tapes-host running", "shm", h.shm.Path(), "http", h.httpAddr, "version", versionString())
	// The loop ends only through a case that says why: a signal that
	// arrives before the first select is still logged as the reason.
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping: draining and reporting one last time")
			break loop
		case <-hup:
			rl.reload()
		case <-h.failed():
			log.Error("stopping: the shm drain stopped (see above)")
			break loop
		}
	}
	h.shutdown()
	return h.err()
}

// notifyHUP catches SIGHUP, whose default action would kill tapes-host
// without a last drain or report (a closed terminal, logrotate, systemd's
// ExecReload all send it).
func notifyHUP() chan os.Signal {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup
}

// newLogger writes cfg's log format to w, at a level a reload can change.
func newLogger(cfg *config, w io.Writer) *slog.Logger {
	cfg.levelVar = new(slog.LevelVar)
	cfg.levelVar.Set(cfg.logLevel)
	opts := &slog.HandlerOptions{Level: cfg.levelVar}
	if cfg.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
