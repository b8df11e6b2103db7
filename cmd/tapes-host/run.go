package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
)

const runUsage = `Usage: tapes-host run [flags] -workers N -- CMD [ARGS...]

Runs the host and N worker processes running CMD, the way gunicorn or uWSGI run
workers. Each worker gets TAPES_SHM (the shm file) and TAPES_WORKER (its index,
0..N-1) in its environment. A worker that exits is restarted after a backoff
that doubles from -restart-min to -restart-max and resets once a worker has run
for -restart-max. SIGTERM or SIGINT is forwarded to every worker; workers get
-stop-timeout to exit before SIGKILL; then the host drains every ring, reports
one last time and exits 0.

Unless -shm names a file, the shm file is an anonymous memfd sealed against
shrinking and growing, handed to each worker as descriptor 3
(TAPES_SHM=/proc/self/fd/3): nobody can truncate it under the workers, which
would kill them with SIGBUS. Other processes of the same user can attach
through the /proc/<pid>/fd/<n> path printed at start. With -shm, the file
lives at that path and survives the host (see docs/shm-layout.md).
If the shm file is damaged, the host stops the workers and exits 1.

Flags:
`

func errUnexpectedArgs(rest []string) error {
	return fmt.Errorf("unexpected arguments %q (see -h)", strings.Join(rest, " "))
}

type superviseConfig struct {
	workers     int
	restartMin  time.Duration
	restartMax  time.Duration
	stopTimeout time.Duration
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := &config{}
	fs := newFlagSet("tapes-host run", cfg, stderr)
	sc := addSuperviseFlags(fs)
	argv, err := parseFlags(fs, cfg, args, stderr, runUsage)
	if err != nil {
		return err
	}
	if err := sc.validate(argv); err != nil {
		return usageError{err}
	}
	return supervise(ctx, cfg, sc, argv, stdout, stderr)
}

func addSuperviseFlags(fs *flag.FlagSet) *superviseConfig {
	sc := &superviseConfig{}
	fs.IntVar(&sc.workers, "workers", 1, "number of worker processes")
	fs.DurationVar(&sc.restartMin, "restart-min", 100*time.Millisecond, "first restart backoff")
	fs.DurationVar(&sc.restartMax, "restart-max", 10*time.Second, "longest restart backoff")
	fs.DurationVar(&sc.stopTimeout, "stop-timeout", 10*time.Second, "how long workers get to exit after SIGTERM before SIGKILL")
	return sc
}

func (sc *superviseConfig) validate(argv []string) error {
	switch {
	case len(argv) == 0:
		return errors.New("run needs a command: tapes-host run -workers N -- CMD [ARGS...]")
	case sc.workers < 1:
		return fmt.Errorf("-workers %d: must be at least 1", sc.workers)
	case sc.restartMin <= 0 || sc.restartMax < sc.restartMin:
		return fmt.Errorf("-restart-min %v / -restart-max %v: need 0 < min <= max", sc.restartMin, sc.restartMax)
	case sc.stopTimeout <= 0:
		return fmt.Errorf("-stop-timeout %v: must be positive", sc.stopTimeout)
	}
	return nil
}

// supervise runs the host and keeps sc.workers copies of argv running until
// a signal arrives (or ctx ends), then stops the workers and the host.
func supervise(ctx context.Context, cfg *config, sc *superviseConfig, argv []string, stdout, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	sigctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.shmMemfd = cfg.shmPath == ""
	h, err := startHost(sigctx, cfg, log, stdout)
	if err != nil {
		return err
	}
	// Workers stop on a signal or when the host cannot go on.
	sigctx, cancel := context.WithCancel(sigctx)
	defer cancel()
	go func() {
		select {
		case <-h.failed():
			cancel()
		case <-sigctx.Done():
		}
	}()
	restarts := h.reg.Counter(selfPrefix + ".workers.restarts")
	var running atomic.Int64
	h.reg.Gauge(selfPrefix+".workers.running", func() float64 { return float64(running.Load()) })
	s := &supervisor{sc: sc, argv: argv, log: log, shmPath: h.shm.Path(), stdout: stdout, stderr: stderr,
		restarts: restarts, running: &running}
	if cfg.shmMemfd {
		// The worker's descriptor 3 (the first of ExtraFiles).
		s.shmFile, s.shmPath = h.shm.File(), "/proc/self/fd/3"
	}
	var wg sync.WaitGroup
	for i := range sc.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.keep(sigctx, i)
		}()
	}
	<-sigctx.Done()
	log.Info("stopping workers", "timeout", sc.stopTimeout)
	wg.Wait()
	log.Info("workers stopped: draining and reporting one last time")
	h.shutdown()
	return h.err()
}

type supervisor struct {
	sc             *superviseConfig
	argv           []string
	log            *slog.Logger
	shmPath        string
	shmFile        *os.File // the memfd, inherited by workers; nil for a path
	stdout, stderr io.Writer
	restarts       *registry.Counter
	running        *atomic.Int64
}

// keep runs worker i until ctx ends, restarting it with backoff whenever it
// exits, and stops it with SIGTERM (then SIGKILL) when ctx ends.
func (s *supervisor) keep(ctx context.Context, i int) {
	backoff := s.sc.restartMin
	for {
		started := time.Now()
		err := s.once(ctx, i)
		if ctx.Err() != nil {
			return
		}
		s.restarts.Inc()
		if time.Since(started) >= s.sc.restartMax {
			backoff = s.sc.restartMin
		}
		s.log.Warn("worker exited; restarting", "worker", i, "err", err, "after", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.sc.restartMax)
	}
}

func (s *supervisor) once(ctx context.Context, i int) error {
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Env = append(os.Environ(), shm.EnvVar+"="+s.shmPath, "TAPES_WORKER="+strconv.Itoa(i))
	cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
	if s.shmFile != nil {
		cmd.ExtraFiles = []*os.File{s.shmFile}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.running.Add(1)
	defer s.running.Add(-1)
	s.log.Info("worker started", "worker", i, "pid", cmd.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		return err
	case <-time.After(s.sc.stopTimeout):
		s.log.Warn("worker ignored SIGTERM; killing it", "worker", i, "pid", cmd.Process.Pid)
		_ = cmd.Process.Kill()
		return <-done
	}
}
