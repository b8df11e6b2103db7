package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
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
0..N-1) in its environment and runs in its own process group. A worker that
exits is restarted after a backoff that doubles from -restart-min to
-restart-max and resets once a worker has run for -restart-max; a worker that
exits more than -restart-limit times within -restart-window makes tapes-host
stop everything and exit 1. A CMD that cannot be started at all (missing, not
executable) is an error at once, never retried. SIGTERM or SIGINT is forwarded
to every worker's process group; workers get -stop-timeout to exit before
SIGKILL; then the host drains every ring, reports one last time and exits 0.
If tapes-host itself dies (even by SIGKILL), the kernel kills its workers
(PR_SET_PDEATHSIG), so none keeps recording into a file nothing drains.

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
	workers       int
	restartMin    time.Duration
	restartMax    time.Duration
	restartLimit  int
	restartWindow time.Duration
	stopTimeout   time.Duration
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	parse := func(out io.Writer) (*flag.FlagSet, *config, []string, error) {
		cfg := &config{}
		fs := newFlagSet("tapes-host run", cfg, out)
		sc := addSuperviseFlags(fs)
		argv, err := parseFlags(fs, cfg, args, out, runUsage)
		if err == nil {
			if err = sc.validate(argv); err != nil {
				err = usageError{err}
			}
		}
		cfg.supervise = sc
		return fs, cfg, argv, err
	}
	fs, cfg, argv, err := parse(stderr)
	if err != nil {
		return err
	}
	return supervise(ctx, fs, cfg, cfg.supervise, argv, parse, stdout, stderr)
}

func addSuperviseFlags(fs *flag.FlagSet) *superviseConfig {
	sc := &superviseConfig{}
	fs.IntVar(&sc.workers, "workers", 1, "number of worker processes")
	fs.DurationVar(&sc.restartMin, "restart-min", 100*time.Millisecond, "first restart backoff")
	fs.DurationVar(&sc.restartMax, "restart-max", 10*time.Second, "longest restart backoff")
	fs.IntVar(&sc.restartLimit, "restart-limit", 10, "give up (stop everything, exit 1) when one worker exits more than this many times within -restart-window; 0: never give up")
	fs.DurationVar(&sc.restartWindow, "restart-window", time.Minute, "the window -restart-limit counts exits in")
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
	case sc.restartLimit < 0:
		return fmt.Errorf("-restart-limit %d: must not be negative", sc.restartLimit)
	case sc.restartWindow <= 0:
		return fmt.Errorf("-restart-window %v: must be positive", sc.restartWindow)
	}
	// A command that cannot run is found now, before the shm file exists,
	// not by restarting it forever.
	if _, err := exec.LookPath(argv[0]); err != nil {
		return fmt.Errorf("cannot run %s: %w", argv[0], lookPathCause(err))
	}
	return nil
}

// lookPathCause strips exec's "exec: \"x\": " and "fork/exec x: "
// prefixes, which would repeat the command name.
func lookPathCause(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		err = ee.Err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// supervise runs the host and keeps sc.workers copies of argv running until
// a signal arrives (or ctx ends), then stops the workers and the host. It
// returns an error (exit 1) when a worker cannot be started or exits more
// often than the restart limit allows.
func supervise(ctx context.Context, fset *flag.FlagSet, cfg *config, sc *superviseConfig, argv []string,
	parse func(io.Writer) (*flag.FlagSet, *config, []string, error), stdout, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	sigctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.shmMemfd = cfg.shmPath == ""
	hup := notifyHUP()
	defer signal.Stop(hup)
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
	sp := newSpawner()
	s := &supervisor{sc: sc, argv: argv, log: log, shmPath: h.shm.Path(), stdout: stdout, stderr: stderr,
		restarts: restarts, running: &running, spawn: sp, fatal: make(chan error, 1)}
	if cfg.shmMemfd {
		// The worker's descriptor 3 (the first of ExtraFiles).
		s.shmFile, s.shmPath = h.shm.File(), "/proc/self/fd/3"
	}
	wctx, stopWorkers := context.WithCancel(sigctx)
	defer stopWorkers()
	var wg sync.WaitGroup
	for i := range sc.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.keep(wctx, i)
		}()
	}
	rl := &reloader{log: log, cur: fset, cfg: cfg, h: h, parse: parse}
	var failed error
	for failed == nil && sigctx.Err() == nil {
		select {
		case <-sigctx.Done():
		case <-hup:
			rl.reload()
		case failed = <-s.fatal:
			log.Error("giving up: stopping every worker", "err", failed)
		}
	}
	log.Info("stopping workers", "timeout", sc.stopTimeout)
	stopWorkers()
	wg.Wait()
	sp.close()
	log.Info("workers stopped: draining and reporting one last time")
	h.shutdown()
	if failed != nil {
		return fmt.Errorf("run: %w", failed)
	}
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
	spawn          *spawner
	fatal          chan error // the first reason to give up
}

func (s *supervisor) giveUp(err error) {
	select {
	case s.fatal <- err:
	default:
	}
}

// keep runs worker i until ctx ends, restarting it with backoff whenever it
// exits, and stops it with SIGTERM (then SIGKILL) when ctx ends. It gives
// up (giveUp) when the command cannot be started or the worker exits more
// than the restart limit allows.
func (s *supervisor) keep(ctx context.Context, i int) {
	backoff := s.sc.restartMin
	var exits []time.Time // unrequested exits within the restart window
	for {
		started := time.Now()
		err := s.once(ctx, i)
		if ctx.Err() != nil {
			return
		}
		var se startError
		if errors.As(err, &se) && cannotRun(se.err) {
			s.giveUp(fmt.Errorf("worker %d: cannot start %s: %w", i, s.argv[0], lookPathCause(se.err)))
			return
		}
		now := time.Now()
		exits = append(exits, now)
		for len(exits) > 0 && now.Sub(exits[0]) > s.sc.restartWindow {
			exits = exits[1:]
		}
		if s.sc.restartLimit > 0 && len(exits) > s.sc.restartLimit {
			s.giveUp(fmt.Errorf("worker %d exited %d times within %v (-restart-limit %d); last: %v",
				i, len(exits), s.sc.restartWindow, s.sc.restartLimit, err))
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

// startError is a worker that could not be started (as opposed to one that
// ran and exited).
type startError struct{ err error }

func (e startError) Error() string { return "start: " + e.err.Error() }
func (e startError) Unwrap() error { return e.err }

// cannotRun reports start errors that retrying cannot fix.
func cannotRun(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) ||
		errors.Is(err, syscall.ENOEXEC) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, exec.ErrNotFound)
}

func (s *supervisor) once(ctx context.Context, i int) error {
	if err := ctx.Err(); err != nil {
		return err // stopping: start nothing new
	}
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Env = append(os.Environ(), shm.EnvVar+"="+s.shmPath, "TAPES_WORKER="+strconv.Itoa(i))
	cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
	if s.shmFile != nil {
		cmd.ExtraFiles = []*os.File{s.shmFile}
	}
	// Its own process group, so that stopping a worker reaches the
	// processes it started and a Ctrl-C in a terminal reaches tapes-host
	// alone, which then stops the workers in order. Pdeathsig: the kernel
	// kills the worker if tapes-host dies without stopping it.
	cmd.SysProcAttr = workerSysProcAttr()
	if err := s.spawn.start(cmd); err != nil {
		return startError{err}
	}
	s.running.Add(1)
	defer s.running.Add(-1)
	pid := cmd.Process.Pid
	s.log.Info("worker started", "worker", i, "pid", pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	_ = signalGroup(pid, syscall.SIGTERM)
	select {
	case err := <-done:
		return err
	case <-time.After(s.sc.stopTimeout):
		s.log.Warn("worker ignored SIGTERM; killing it", "worker", i, "pid", pid)
		_ = signalGroup(pid, syscall.SIGKILL)
		_ = cmd.Process.Kill()
		return <-done
	}
}
