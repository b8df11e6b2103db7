package main

// The parent's side of plugin isolation: one supervisor goroutine per
// plugin starts its process (pluginworker.go), asks it for calls over a
// pipe, kills it (SIGKILL to its process group) when a call passes the
// deadline or the process grows past its memory budget, and starts a new
// one with exponential backoff. See docs/RATIONALE.md, "Plugins: process
// isolation".

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tapes-go/tapes/registry"
)

const (
	// loadTimeout bounds starting a plugin process and compiling its
	// module: our code only, but a cold compile of a large Go guest takes
	// seconds on a busy machine, far beyond a typical -plugin-timeout.
	loadTimeout = 30 * time.Second
	// Restart backoff: the first restart after a failure waits
	// backoffMin, each further consecutive failure twice as long, up to
	// backoffMax; a successful call resets it.
	backoffMin = 100 * time.Millisecond
	backoffMax = time.Minute
	// shutdownGrace is how long a call in flight may still run once the
	// host is stopping.
	shutdownGrace = 500 * time.Millisecond
	// memoryPoll is how often the parent reads a plugin process's RSS.
	memoryPoll = 50 * time.Millisecond
	// Output the parent logs from one plugin process: lines longer than
	// maxLine are cut, and beyond linesBurst lines at once and
	// linesPerSec per second after that, lines are dropped; both count
	// into output_dropped_bytes.
	maxLine     = 1024
	linesBurst  = 50
	linesPerSec = 10
)

// errorKinds are the kinds a failed plugin call is counted under.
var errorKinds = []string{errTrap, errTimeout, errCrash, errMemory, errProtocol}

// pluginMetrics are one plugin's self-metrics, under
// tapes.host.plugins.<segment>.
type pluginMetrics struct {
	calls, restarts, defines, records, rejected, dropped *registry.Counter
	errors                                               map[string]*registry.Counter
	duration                                             *registry.Timer
	memory                                               *registry.Gauge
}

// longestPluginMetric is the longest suffix newPluginMetrics uses:
// config validation keeps every prefix short enough for it.
const longestPluginMetric = "output_dropped_bytes"

// pluginMetricName is one self-metric of the plugin with segment seg.
func pluginMetricName(seg, suffix string) string {
	return selfPrefix + ".plugins." + seg + "." + suffix
}

func newPluginMetrics(r *registry.Registry, seg string) pluginMetrics {
	p := pluginMetricName(seg, "")
	m := pluginMetrics{
		calls:    r.Counter(p + "calls"),
		restarts: r.Counter(p + "restarts"),
		defines:  r.Counter(p + "defines"),
		records:  r.Counter(p + "records"),
		rejected: r.Counter(p + "rejected"),
		dropped:  r.Counter(p + longestPluginMetric),
		errors:   map[string]*registry.Counter{},
		duration: r.Timer(p + "call_time"),
		memory:   r.Gauge(p+"memory_bytes", nil),
	}
	for _, k := range errorKinds {
		m.errors[k] = r.Counter(p + "errors." + k)
	}
	return m
}

// callError is a failed call, counted under its kind.
type callError struct {
	kind string
	err  error
}

func (e *callError) Error() string { return e.kind + ": " + e.err.Error() }

// errStopping ends a call cut short by the host's shutdown: not the
// plugin's fault, not counted.
var errStopping = errors.New("host stopping")

// pluginSup runs one plugin.
type pluginSup struct {
	spec    pluginSpec
	seg     string
	log     *slog.Logger
	m       pluginMetrics
	self    string
	shm     string
	cache   string
	pages   int
	timeout time.Duration
	every   time.Duration

	// loaded is closed once a process of this plugin has loaded its
	// module (and run _initialize): readiness waits for it.
	loaded   chan struct{}
	loadOnce sync.Once

	child   *child
	started int
	last    workerReply // the current child's cumulative counters, as last seen
}

// child is one plugin process.
type child struct {
	cmd     *exec.Cmd
	pid     int
	stdin   io.WriteCloser
	replies chan workerReply // closed at EOF or an unreadable reply
	badLine atomic.Bool      // the reply stream ended on an unreadable line
	exited  chan struct{}    // closed once the process is reaped
	waitErr error            // valid after exited

	cmdModule bool        // a command module: run _start, not collect
	memKilled atomic.Bool // killed for its RSS
	oom       atomic.Bool // its runtime said it ran out of memory
}

// spawn starts a plugin process with its pipes and watchers.
func (s *pluginSup) spawn() (*child, error) {
	c := &child{replies: make(chan workerReply, 4), exited: make(chan struct{})}
	c.cmd = exec.Command(s.self, pluginWorkerCmd,
		"-shm", s.shm, "-wasm", s.spec.path, "-prefix", s.spec.prefix,
		"-pages", strconv.Itoa(s.pages), "-cache", s.cache, "-ppid", strconv.Itoa(os.Getpid()))
	// Its own process group, so one kill reaches anything it might start;
	// Pdeathsig, so that it never outlives the host (SIGKILLed or not).
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.cmd.Env = []string{} // nothing of the host's environment
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	c.cmd.Stdout, c.cmd.Stderr = outW, errW
	err = c.cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	c.pid = c.cmd.Process.Pid
	go c.readReplies(outR)
	go c.readOutput(errR, s.log, s.m.dropped)
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	go c.watchMemory(pluginLimit(s.pages), s.m.memory)
	return c, nil
}

func (c *child) readReplies(r io.ReadCloser) {
	defer r.Close()
	defer close(c.replies)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		var rep workerReply
		if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
			c.badLine.Store(true)
			return
		}
		// Unasked replies from a process nobody reads any more (killed
		// after a timeout) must not hold this goroutine forever.
		select {
		case c.replies <- rep:
		case <-c.exited:
			return
		}
	}
	if sc.Err() != nil {
		c.badLine.Store(true)
	}
}

// readOutput logs the process's stderr (its guest's output, through the
// child's own bounded writer, and anything its runtime prints) line by
// line, cutting long lines and dropping lines beyond the rate.
func (c *child) readOutput(r io.ReadCloser, log *slog.Logger, dropped *registry.Counter) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLine)
	tokens, last := float64(linesBurst), time.Now()
	for {
		line, err := br.ReadSlice('\n')
		n := len(line)
		cut := false
		for errors.Is(err, bufio.ErrBufferFull) { // the rest of a long line
			var more []byte
			more, err = br.ReadSlice('\n')
			dropped.Add(int64(len(more)))
			cut = true
		}
		if n > 0 {
			now := time.Now()
			tokens = min(linesBurst, tokens+now.Sub(last).Seconds()*linesPerSec)
			last = now
			text := string(bytes.TrimRight(line, "\r\n"))
			// The Go runtime's last words when an allocation fails
			// ("fatal error: runtime: out of memory").
			if (strings.HasPrefix(text, "fatal error: ") || strings.HasPrefix(text, "runtime: ")) && strings.Contains(text, "out of memory") {
				c.oom.Store(true)
			}
			if tokens >= 1 {
				tokens--
				if cut {
					text += " [cut]"
				}
				log.Info("plugin output", "line", text)
			} else {
				dropped.Add(int64(n))
			}
		}
		if err != nil {
			return
		}
	}
}

// watchMemory samples the process's RSS into g and kills the process
// above limit, until it exits.
func (c *child) watchMemory(limit uint64, g *registry.Gauge) {
	t := time.NewTicker(memoryPoll)
	defer t.Stop()
	path := "/proc/" + strconv.Itoa(c.pid) + "/statm"
	page := uint64(os.Getpagesize())
	for {
		select {
		case <-c.exited:
			g.Set(0)
			return
		case <-t.C:
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		pages, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		rss := pages * page
		g.Set(float64(rss))
		if rss > limit {
			c.memKilled.Store(true)
			c.kill()
			return
		}
	}
}

// kill ends the process group and waits until the process is reaped. A
// process already reaped is not signalled: its pid may be reused.
func (c *child) kill() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = syscall.Kill(-c.pid, syscall.SIGKILL)
	<-c.exited
}

// death is the error for a process that ended without replying.
func (c *child) death() *callError {
	select {
	case <-c.exited:
	case <-time.After(time.Second):
		c.kill()
	}
	switch {
	case c.memKilled.Load():
		return &callError{errMemory, errors.New("killed: resident memory above its budget")}
	case c.oom.Load():
		return &callError{errMemory, fmt.Errorf("ran out of memory (%v)", c.waitErr)}
	case c.badLine.Load():
		return &callError{errProtocol, errors.New("unreadable reply")}
	}
	return &callError{errCrash, fmt.Errorf("process ended: %v", c.waitErr)}
}

// rpc sends op and waits for its reply until timeout. A call still
// running at the deadline, or when ctx ends and a short grace has passed,
// is ended by killing the process.
func (c *child) rpc(ctx context.Context, op string, timeout time.Duration) (workerReply, error) {
	req, _ := json.Marshal(workerRequest{Op: op})
	if _, err := c.stdin.Write(append(req, '\n')); err != nil {
		return workerReply{}, c.death()
	}
	return c.await(ctx, timeout)
}

func (c *child) await(ctx context.Context, timeout time.Duration) (workerReply, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	done := ctx.Done()
	for {
		select {
		case r, ok := <-c.replies:
			if !ok {
				return workerReply{}, c.death()
			}
			if !r.OK {
				kind := r.Kind
				// The reply comes from a process running a hostile guest:
				// only a kind that is exactly one of ours names a counter.
				if !slices.Contains(errorKinds, kind) {
					kind = errProtocol
				}
				return r, &callError{kind, errors.New(r.Err)}
			}
			return r, nil
		case <-deadline.C:
			c.kill()
			if done == nil {
				return workerReply{}, errStopping
			}
			return workerReply{}, &callError{errTimeout, fmt.Errorf("no reply within %v", timeout)}
		case <-done:
			// Let the call finish within the grace, then stop it.
			done = nil
			if !deadline.Stop() {
				<-deadline.C
			}
			deadline.Reset(shutdownGrace)
		}
	}
}

// stop asks the process to close its slot and exit, and kills it if it
// does not within the grace.
func (c *child) stop() {
	req, _ := json.Marshal(workerRequest{Op: opStop})
	if _, err := c.stdin.Write(append(req, '\n')); err == nil {
		select {
		case <-c.exited:
			return
		case <-time.After(shutdownGrace):
		}
	}
	c.kill()
}

// run drives the plugin until ctx ends: a collector is called every
// interval, a command's _start runs until it succeeds once. Every
// failure kills the process; the next one starts after the backoff. An
// idle process is left running when ctx ends, so that its gauges last
// through the host's final report; close ends it.
func (s *pluginSup) run(ctx context.Context) {
	var backoff time.Duration
	for ctx.Err() == nil {
		if s.child == nil {
			collect, command, err := s.startChild(ctx)
			if err == nil && !collect && !command {
				s.log.Error("plugin exports neither tapes_collect nor _start: nothing to run")
				s.close()
				return
			}
			if err != nil {
				if !s.failed(ctx, err, &backoff) {
					return
				}
				continue
			}
			s.loadOnce.Do(func() { close(s.loaded) })
		}
		op := opCollect
		if s.child.cmdModule {
			op = opStart
		}
		if err := s.call(ctx, op); err != nil {
			if !s.failed(ctx, err, &backoff) {
				return
			}
			continue
		}
		backoff = 0
		if op == opStart {
			s.log.Info("command plugin finished")
			s.close()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.every):
		}
	}
}

// startChild starts a process, waits for its module to load and, for a
// reactor, instantiates it.
func (s *pluginSup) startChild(ctx context.Context) (collect, command bool, err error) {
	if s.started > 0 {
		s.m.restarts.Inc()
	}
	s.started++
	c, err := s.spawn()
	if err != nil {
		return false, false, &callError{errCrash, err}
	}
	s.child, s.last = c, workerReply{}
	r, err := c.await(ctx, loadTimeout)
	if err != nil {
		return false, false, err
	}
	if r.Op != "loaded" {
		return false, false, &callError{errProtocol, fmt.Errorf("first reply %q, want loaded", r.Op)}
	}
	c.cmdModule = r.Start
	if r.Start || !r.Collect {
		return r.Collect, r.Start, nil
	}
	return true, false, s.call(ctx, opInit)
}

// call runs one request and counts it.
func (s *pluginSup) call(ctx context.Context, op string) error {
	s.m.calls.Inc()
	start := time.Now()
	r, err := s.child.rpc(ctx, op, s.timeout)
	s.m.duration.Update(time.Since(start))
	s.account(r)
	return err
}

// account adds what the child's counters gained since its last reply.
func (s *pluginSup) account(r workerReply) {
	if r.Op == "" {
		return
	}
	delta := func(c *registry.Counter, now, before uint64) {
		if now > before {
			c.Add(int64(now - before))
		}
	}
	delta(s.m.defines, r.Defines, s.last.Defines)
	delta(s.m.records, r.Records, s.last.Records)
	delta(s.m.rejected, r.Rejected, s.last.Rejected)
	delta(s.m.dropped, r.Dropped, s.last.Dropped)
	s.last = r
}

// failed counts err, kills the process and waits out the backoff; false
// means the host is stopping.
func (s *pluginSup) failed(ctx context.Context, err error, backoff *time.Duration) bool {
	s.killChild()
	if ctx.Err() != nil || errors.Is(err, errStopping) {
		return false
	}
	kind := errCrash
	var ce *callError
	if errors.As(err, &ce) {
		kind = ce.kind
	}
	if c := s.m.errors[kind]; c != nil {
		c.Inc()
	} else {
		s.m.errors[errProtocol].Inc()
	}
	*backoff = min(max(2**backoff, backoffMin), backoffMax)
	s.log.Warn("plugin failed; restarting after backoff", "kind", kind, "err", err, "backoff", *backoff)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(*backoff):
		return true
	}
}

func (s *pluginSup) killChild() {
	if s.child != nil {
		s.child.kill()
		s.child.stdin.Close()
		s.child = nil
	}
}

// close stops the process, if any.
func (s *pluginSup) close() {
	if s.child != nil {
		s.child.stop()
		s.child.stdin.Close()
		s.child = nil
	}
}
