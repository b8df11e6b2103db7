package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tapes-go/tapes/registry"
)

// stallAfter is how long the drain loop may go without completing a pass
// before the host reports itself unhealthy. A running drain passes at least
// every 250 ms, or every second with no worker attached, so this only trips on a loop that is
// stuck or gone, not on a busy machine.
const stallAfter = 10 * time.Second

// health answers /healthz and /readyz from what the host's parts report
// through small hooks: the drain goroutine says when it ended and why, the
// shm host's pass count is the drain's heartbeat, startHost says when the
// plugins are loaded, and the shm file is checked on every probe.
//
// Healthy: the drain loop runs (has not returned, and has passed within
// stallAfter) and the shm file is the one the host mapped, at full size.
// Ready: healthy, plugins loaded, and not stopping.
type health struct {
	mu          sync.Mutex
	now         func() time.Time
	passes      func() uint64 // nil until the shm file is open
	lastPasses  uint64
	lastMoved   time.Time
	drainEnded  bool
	drainErr    error
	pluginsDone bool
	stopping    bool

	path     string
	dev, ino uint64
	size     int64
}

func newHealth() *health { return &health{now: time.Now} }

// shmOpened records the file the host mapped: a file replaced or removed
// under the host (a tmpfs cleaner, a second host started on the same path
// after deleting it) strands every worker started later.
func (hl *health) shmOpened(path string, passes func() uint64) {
	hl.mu.Lock()
	defer hl.mu.Unlock()
	hl.path, hl.passes, hl.lastMoved = path, passes, hl.now()
	if fi, err := os.Stat(path); err == nil {
		hl.size = fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			hl.dev, hl.ino = uint64(st.Dev), st.Ino
		}
	}
}

// drainStopped is called by the drain goroutine when Drain returns; err is
// nil for a deliberate stop (shutdown).
func (hl *health) drainStopped(err error) {
	hl.mu.Lock()
	defer hl.mu.Unlock()
	hl.drainEnded, hl.drainErr = true, err
}

func (hl *health) pluginsLoaded() { hl.mu.Lock(); hl.pluginsDone = true; hl.mu.Unlock() }
func (hl *health) stop()          { hl.mu.Lock(); hl.stopping = true; hl.mu.Unlock() }

// problems returns why the host is unhealthy (empty: healthy) and why it is
// not ready (a superset).
func (hl *health) problems() (unhealthy, unready []string) {
	hl.mu.Lock()
	defer hl.mu.Unlock()
	now := hl.now()
	switch {
	case hl.passes == nil:
		unhealthy = append(unhealthy, "shm file not open")
	case hl.drainEnded && hl.drainErr != nil:
		unhealthy = append(unhealthy, "draining stopped: "+hl.drainErr.Error())
	case hl.drainEnded && !hl.stopping:
		unhealthy = append(unhealthy, "draining stopped")
	default:
		if p := hl.passes(); p != hl.lastPasses {
			hl.lastPasses, hl.lastMoved = p, now
		} else if d := now.Sub(hl.lastMoved); d > stallAfter && !hl.drainEnded {
			unhealthy = append(unhealthy, fmt.Sprintf("draining stalled: no pass over the rings for %v", d.Round(time.Second)))
		}
	}
	if hl.path != "" {
		if err := hl.fileProblem(); err != nil {
			unhealthy = append(unhealthy, err.Error())
		}
	}
	unready = append(unready, unhealthy...)
	if !hl.pluginsDone {
		unready = append(unready, "starting: plugins not loaded yet")
	}
	if hl.stopping {
		unready = append(unready, "stopping")
	}
	return unhealthy, unready
}

func (hl *health) fileProblem() error {
	fi, err := os.Stat(hl.path)
	if err != nil {
		return fmt.Errorf("shm file %s: %w: workers started now cannot reach this host", hl.path, errors.Unwrap(err))
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && (uint64(st.Dev) != hl.dev || st.Ino != hl.ino) {
		return fmt.Errorf("shm file %s was replaced: workers started now write to a file this host does not drain", hl.path)
	}
	if fi.Size() < hl.size {
		return fmt.Errorf("shm file %s damaged: %d bytes, was %d", hl.path, fi.Size(), hl.size)
	}
	return nil
}

// routes serves the probes under Kubernetes' and Prometheus's names.
func (hl *health) routes() map[string]http.Handler {
	healthz := hl.handler(func() []string { u, _ := hl.problems(); return u }, "healthy")
	readyz := hl.handler(func() []string { _, u := hl.problems(); return u }, "ready")
	return map[string]http.Handler{"/healthz": healthz, "/-/healthy": healthz, "/readyz": readyz, "/-/ready": readyz}
}

// registerMetrics reports both answers as gauges (tapes.host.healthy,
// tapes.host.ready), for push reporters and alerting.
func (hl *health) registerMetrics(reg *registry.Registry) {
	reg.Gauge(selfPrefix+".healthy", func() float64 { u, _ := hl.problems(); return b2f(len(u) == 0) })
	reg.Gauge(selfPrefix+".ready", func() float64 { _, u := hl.problems(); return b2f(len(u) == 0) })
}

// handler answers 200 and "<ok>" when problems returns nothing, else 503
// and one problem per line.
func (hl *health) handler(problems func() []string, ok string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		p := problems()
		if len(p) == 0 {
			fmt.Fprintln(w, ok)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(p, "\n"))
	})
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
