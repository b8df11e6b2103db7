package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func serveMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, rest, err := parseServeFlags("tapes-host", args, stderr, usageHeader)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{errUnexpectedArgs(rest)}
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	h, err := startHost(ctx, cfg, log, stdout)
	if err != nil {
		return err
	}
	log.Info("tapes-host running", "shm", h.shm.Path(), "http", h.httpAddr)
	select {
	case <-ctx.Done():
		log.Info("stopping: draining and reporting one last time")
	case <-h.failed():
		log.Error("stopping: the shm drain stopped (see above)")
	}
	h.shutdown()
	return h.err()
}

func newLogger(cfg *config, w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: cfg.logLevel}))
}
