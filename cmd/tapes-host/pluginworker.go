package main

// The plugin process: tapes-host re-executes itself as
// "tapes-host plugin-worker ..." once per plugin (see pluginsup.go for the
// parent's side). The child runs one WebAssembly module with no in-process
// interrupt, recording through its own slot of the shm file like any worker;
// the parent bounds every call with a deadline it enforces by SIGKILL.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/tapes-go/tapes/hostabi"
	"github.com/tapes-go/tapes/hostabi/plugin"
	"github.com/tapes-go/tapes/shm"
)

// pluginWorkerCmd is the hidden subcommand a plugin process runs.
const pluginWorkerCmd = "plugin-worker"

// Requests the parent sends, one JSON line each on the child's stdin.
const (
	opInit    = "init"    // instantiate a reactor (runs _initialize)
	opCollect = "collect" // call tapes_collect, then tapes_flush
	opStart   = "start"   // run a command module's _start
	opStop    = "stop"    // close the shm slot and exit 0
)

// Error kinds in replies and in the parent's metrics.
const (
	errTrap     = "trap"     // the guest trapped or exited non-zero
	errTimeout  = "timeout"  // the parent's deadline passed (parent only)
	errCrash    = "crash"    // the process died or could not load the module
	errMemory   = "memory"   // killed above its memory budget, or ran out of it
	errProtocol = "protocol" // a reply the parent could not read
)

type workerRequest struct {
	Op string `json:"op"`
}

// workerReply answers a request; the first reply, sent unasked once the
// module is compiled, has Op "loaded" and the module's shape. Counters are
// cumulative for the child's life.
type workerReply struct {
	Op      string `json:"op"`
	OK      bool   `json:"ok"`
	Kind    string `json:"kind,omitempty"`
	Err     string `json:"err,omitempty"`
	Collect bool   `json:"collect,omitempty"` // exports tapes_collect
	Start   bool   `json:"start,omitempty"`   // a command module (_start, no _initialize)

	Defines  uint64 `json:"defines"`
	Records  uint64 `json:"records"`
	Rejected uint64 `json:"rejected"`
	Dropped  uint64 `json:"dropped"` // output bytes the child dropped
}

// Limits of the child's guest output, before the parent's own per-line
// limits (pluginsup.go).
const (
	outputBurst  = 64 << 10 // bytes a guest may write at once
	outputPerSec = 16 << 10 // bytes per second after that
)

// runtimeAllowance is the memory a plugin process may use beyond its
// guest's linear memory: the Go runtime, wazero, compiled code and the
// guest's call stack. Compiling a 2 MB Go guest cold peaks near 100 MiB.
const runtimeAllowance = 192 << 20

// pluginLimit is the address space (RLIMIT_DATA) and resident size a
// plugin process may reach with a linear memory of pages 64 KiB pages.
func pluginLimit(pages int) uint64 { return uint64(pages)*65536 + runtimeAllowance }

// pluginWorkerMain is the child. Its stdout carries replies only; the
// guest's stdout and stderr go through a bounded writer to its stderr,
// which the parent logs.
func pluginWorkerMain(args []string) error {
	fs := flag.NewFlagSet(pluginWorkerCmd, flag.ContinueOnError)
	shmPath := fs.String("shm", "", "shm file")
	wasmPath := fs.String("wasm", "", "module")
	prefix := fs.String("prefix", "", "metric prefix")
	pages := fs.Int("pages", 256, "memory limit in pages")
	cacheDir := fs.String("cache", "", "compilation cache directory")
	ppid := fs.Int("ppid", 0, "the parent's pid: exit if it is gone")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	// Limits first, while only our code runs.
	limit := pluginLimit(*pages)
	setRlimit(syscall.RLIMIT_CORE, 0)
	setRlimit(syscall.RLIMIT_NOFILE, 64)
	setRlimit(syscall.RLIMIT_DATA, limit)
	debug.SetMemoryLimit(int64(limit))
	// Pdeathsig is armed by the parent's clone; a parent that died before
	// it was armed left us to init.
	if *ppid != 0 && os.Getppid() != *ppid {
		return errors.New("parent gone")
	}

	out := json.NewEncoder(os.Stdout)
	w := &pluginWorker{out: out, gout: &boundedWriter{w: os.Stderr, burst: outputBurst, perSec: outputPerSec}}
	if err := w.load(*shmPath, *wasmPath, *prefix, uint32(*pages), *cacheDir); err != nil {
		w.reply(workerReply{Op: "loaded", Kind: errCrash, Err: err.Error()})
		w.close()
		return err
	}
	w.reply(workerReply{Op: "loaded", OK: true, Collect: w.exports[plugin.CollectExport],
		Start: w.command})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var req workerRequest
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			w.close()
			return fmt.Errorf("request: %w", err)
		}
		if req.Op == opStop {
			return w.close()
		}
		r := w.serve(req.Op)
		r.Op = req.Op
		w.reply(r)
		if !r.OK {
			// The instance may be corrupt; the parent starts a new process.
			w.close()
			return nil
		}
	}
	w.close() // stdin closed: the parent is gone or gave up on us
	return nil
}

func setRlimit(res int, v uint64) {
	_ = syscall.Setrlimit(res, &syscall.Rlimit{Cur: v, Max: v})
}

type pluginWorker struct {
	out  *json.Encoder
	gout *boundedWriter

	client  *shm.Client
	rt      wazero.Runtime
	code    wazero.CompiledModule
	modCfg  wazero.ModuleConfig
	mod     api.Module
	collect api.Function
	flush   api.Function
	exports map[string]bool
	command bool
	host    *hostabi.Module
}

func (w *pluginWorker) load(shmPath, wasmPath, prefix string, pages uint32, cacheDir string) error {
	wasm, err := os.ReadFile(wasmPath)
	if err != nil {
		return err
	}
	if w.client, err = shm.Open(shmPath); err != nil {
		return err
	}
	ctx := context.Background()
	// No interrupt checks and no WithCloseOnContextDone: the parent ends
	// a call that runs too long by killing this process.
	rc := wazero.NewRuntimeConfig().WithMemoryLimitPages(pages)
	if cacheDir != "" {
		if cache, err := wazero.NewCompilationCacheWithDir(cacheDir); err == nil {
			rc = rc.WithCompilationCache(cache)
		}
	}
	w.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, w.rt); err != nil {
		return err
	}
	if w.host, err = hostabi.Instantiate(ctx, w.rt, plugin.ClientSink(w.client), hostabi.Config{Prefix: prefix}); err != nil {
		return err
	}
	if w.code, err = w.rt.CompileModule(ctx, wasm); err != nil {
		return err
	}
	w.exports = map[string]bool{}
	for name := range w.code.ExportedFunctions() {
		w.exports[name] = true
	}
	w.command = w.exports["_start"] && !w.exports["_initialize"]
	w.modCfg = wazero.NewModuleConfig().
		WithStdout(w.gout).WithStderr(w.gout).
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithRandSource(rand.Reader)
	return nil
}

func (w *pluginWorker) serve(op string) workerReply {
	ctx := context.Background()
	var err error
	w.gout.newCall()
	switch op {
	case opInit:
		if w.mod != nil || w.command {
			return w.result(errors.New("init: already initialised, or a command module"), errProtocol)
		}
		w.mod, err = w.rt.InstantiateModule(ctx, w.code, w.modCfg.WithStartFunctions("_initialize"))
		if err == nil {
			if m := w.mod.Memory(); m == nil || reflect.ValueOf(m).IsNil() {
				fmt.Fprintln(os.Stderr, "module has no memory: every tapes function that reads guest memory returns -1 (StatusMemory)")
			}
			w.collect = w.mod.ExportedFunction(plugin.CollectExport)
			w.flush = w.mod.ExportedFunction(plugin.FlushExport)
		}
	case opCollect:
		if w.collect == nil {
			return w.result(errors.New("collect: not initialised, or no tapes_collect export"), errProtocol)
		}
		if _, err = w.collect.Call(ctx); err == nil && w.flush != nil {
			_, err = w.flush.Call(ctx)
		}
	case opStart:
		if !w.command {
			return w.result(errors.New("start: not a command module"), errProtocol)
		}
		var mod api.Module
		mod, err = w.rt.InstantiateModule(ctx, w.code, w.modCfg.WithStartFunctions("_start"))
		if mod != nil {
			mod.Close(ctx)
		}
		var ee *sys.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 0 {
			err = nil
		}
	default:
		return w.result(fmt.Errorf("unknown request %q", op), errProtocol)
	}
	return w.result(err, errTrap)
}

// result is the reply for a call that ended with err (nil: success).
func (w *pluginWorker) result(err error, kind string) workerReply {
	r := workerReply{OK: err == nil, Dropped: w.gout.droppedBytes()}
	if w.host != nil {
		st := w.host.Stats()
		r.Defines, r.Records, r.Rejected = st.Defines, st.Records, st.Rejected
	}
	if err != nil {
		r.Kind, r.Err = kind, err.Error()
		// A trap's message carries the guest's stack; the first part
		// says what happened.
		if len(r.Err) > 2048 {
			r.Err = r.Err[:2048] + " [cut]"
		}
	}
	return r
}

func (w *pluginWorker) reply(r workerReply) {
	_ = w.out.Encode(r)
}

// close releases the shm slot so that the host frees it at once; what the
// guest committed stays in the ring for the host to drain.
func (w *pluginWorker) close() error {
	if w.client != nil {
		return w.client.Close()
	}
	return nil
}

// boundedWriter passes at most burst bytes at once and perSec bytes per
// second after that to w, and counts the rest as dropped: a guest writing
// without end costs its own process a copy loop and the host nothing.
type boundedWriter struct {
	w             io.Writer
	burst, perSec int

	mu      sync.Mutex
	tokens  int
	last    time.Time
	dropped uint64
}

// newCall gives a call the whole burst.
func (b *boundedWriter) newCall() {
	b.mu.Lock()
	b.tokens, b.last = b.burst, time.Now()
	b.mu.Unlock()
}

func (b *boundedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if b.last.IsZero() {
		b.tokens, b.last = b.burst, now
	}
	if add := int(now.Sub(b.last).Seconds() * float64(b.perSec)); add > 0 {
		b.tokens = min(b.burst, b.tokens+add)
		b.last = now
	}
	n := min(len(p), max(b.tokens, 0))
	b.tokens -= n
	b.dropped += uint64(len(p) - n)
	if n > 0 {
		_, _ = b.w.Write(p[:n])
	}
	// The guest is told everything was written: a short write makes
	// wasi-libc and Go retry, spinning on the same bytes.
	return len(p), nil
}

func (b *boundedWriter) droppedBytes() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}
