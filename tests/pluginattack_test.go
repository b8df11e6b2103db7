package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
)

// The attack tests run tapes-host with one hostile plugin and a real worker
// recording beside it, and check what must hold whatever a plugin does: the
// host keeps draining the worker (no event lost) and answering /metrics,
// the plugin's failures are counted and it is restarted, what it committed
// before it was killed reaches the host, and SIGTERM ends the host with
// exit 0 and a last report within a few seconds.
//
// TAPES_ATTACK_HOST=/path/to/tapes-host runs them against another build
// (e.g. one with in-process plugins, where they freeze or crash the host).

// attackHostBin is the tapes-host the attack tests run.
func attackHostBin(t *testing.T) string {
	if b := os.Getenv("TAPES_ATTACK_HOST"); b != "" {
		return b
	}
	return hostBin(t)
}

// hostileC builds tests/testdata/plugins/hostile.c with -DATTACK_<attack>
// at -O0 (so that clang neither removes the recursion nor turns fib into
// a loop), as a reactor or a command.
func hostileC(t *testing.T, attack string, reactor bool) string {
	return builds.Path(t, "hostile-"+attack+".wasm", func(out string) error {
		args := []string{"--target=wasm32-wasi", "-O0", "-DATTACK_" + attack}
		if reactor {
			args = append(args, "-mexec-model=reactor")
		}
		root := testenv.RepoRoot()
		args = append(args, "-I", filepath.Join(root, "guest", "c"), "-o", out,
			filepath.Join(root, "tests", "testdata", "plugins", "hostile.c"))
		cmd := exec.Command(testenv.WasiClang(t), args...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", cmd, err, b)
		}
		return nil
	})
}

// handWasm writes a hand-assembled module and returns its path.
func handWasm(t *testing.T, name string, mod []byte) string {
	return builds.Path(t, name+".wasm", func(out string) error { return os.WriteFile(out, mod, 0o644) })
}

// Wasm binary encoding, just enough for the modules below.
func uleb(v uint64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func wasmVec(items ...[]byte) []byte {
	b := uleb(uint64(len(items)))
	for _, it := range items {
		b = append(b, it...)
	}
	return b
}

func wasmName(s string) []byte { return append(uleb(uint64(len(s))), s...) }

func wasmSection(id byte, content []byte) []byte {
	return append(append([]byte{id}, uleb(uint64(len(content)))...), content...)
}

func wasmBody(locals, code []byte) []byte {
	b := append(locals, code...)
	return append(uleb(uint64(len(b))), b...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var (
	wasmHeader = []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}
	typeVoid   = []byte{0x60, 0x00, 0x00} // () -> ()
	// memory 0, one page, exported as "memory" with tapes_collect = func idx
	oneMemory = wasmSection(5, wasmVec([]byte{0x00, 0x01}))
)

func exports(collectIdx byte, memory bool) []byte {
	e := [][]byte{cat(wasmName("tapes_collect"), []byte{0x00, collectIdx})}
	if memory {
		e = append(e, cat(wasmName("memory"), []byte{0x02, 0x00}))
	}
	return wasmSection(7, wasmVec(e...))
}

// refNullLoopWasm: tapes_collect has a local of type (ref null 0) and
// loops forever. The in-process fuel rewriter read that type as one byte
// where wazero reads two, and inserted no check into the loop.
func refNullLoopWasm() []byte {
	return cat(wasmHeader,
		wasmSection(1, wasmVec(typeVoid)),
		wasmSection(3, wasmVec([]byte{0x00})),
		oneMemory,
		exports(0, true),
		wasmSection(10, wasmVec(wasmBody(
			wasmVec(cat(uleb(1), []byte{0x63, 0x00})),  // 1 local (ref null 0)
			[]byte{0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b}, // loop br 0 end end
		))))
}

// tableGrowWasm: tapes_collect grows a funcref table by 2^31-1 entries,
// which wazero's memory limit does not cover.
func tableGrowWasm() []byte {
	return cat(wasmHeader,
		wasmSection(1, wasmVec(typeVoid)),
		wasmSection(3, wasmVec([]byte{0x00})),
		wasmSection(4, wasmVec([]byte{0x70, 0x00, 0x00})), // funcref table, min 0
		oneMemory,
		exports(0, true),
		wasmSection(10, wasmVec(wasmBody(wasmVec(), []byte{
			0xd0, 0x70, // ref.null func
			0x41, 0xff, 0xff, 0xff, 0xff, 0x07, // i32.const 2^31-1
			0xfc, 0x0f, 0x00, // table.grow 0
			0x1a, 0x0b, // drop end
		}))))
}

// noMemoryWasm: no memory at all; tapes_collect calls tapes.define(1, 0, 0).
func noMemoryWasm() []byte {
	return cat(wasmHeader,
		wasmSection(1, wasmVec([]byte{0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x01, 0x7f}, typeVoid)),
		wasmSection(2, wasmVec(cat(wasmName("tapes"), wasmName("define"), []byte{0x00, 0x00}))),
		wasmSection(3, wasmVec([]byte{0x01})),
		exports(1, false),
		wasmSection(10, wasmVec(wasmBody(wasmVec(), []byte{
			0x41, 0x01, 0x41, 0x00, 0x41, 0x00, 0x10, 0x00, 0x1a, 0x0b, // define(1,0,0) drop end
		}))))
}

// hostCrashLine is how the host's own panic or fatal error starts (a
// plugin process's are logged quoted, inside line="...").
var hostCrashLine = regexp.MustCompile(`(?m)^(panic: |fatal error: |goroutine \d+ \[)`)

const badSeg = "tapes.host.plugins.plugins_bad."

type attack struct {
	wasm   string
	kinds  []string // error kinds the attack may be counted under
	before bool     // the guest records plugins.bad.before first
}

func (a attack) failures(stats map[string]any) float64 {
	var n float64
	for _, k := range a.kinds {
		v, _ := lookup(stats, badSeg+"errors."+k+".value")
		n += v
	}
	return n
}

// waitFor polls /stats until ok holds.
func (h *hostProc) waitFor(what string, ok func(map[string]any) bool) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if ok(h.stats()) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("%s: not after 20s\nstats: %s\nstderr (tail):\n%s", what, h.get("/stats"), tail(h.stderr(), 4000))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// runAttack runs the host with a.wasm as plugins.bad and checks every
// guarantee; it returns the host for attack-specific checks made before
// it stopped (none: it has exited).
func runAttack(t *testing.T, a attack, extra ...string) *hostProc {
	dir := t.TempDir()
	stream := filepath.Join(dir, "stream.jsonl")
	args := append([]string{"-shm", filepath.Join(dir, "a.shm"), "-http", "127.0.0.1:0",
		"-plugin", a.wasm + "=plugins.bad", "-plugin-timeout", "200ms", "-plugin-interval", "100ms",
		"-wasm-cache", filepath.Join(builds.Dir(t), "wasm-cache"),
		"-stream", stream, "-interval", "200ms"}, extra...)
	h := startHostBin(t, attackHostBin(t), args...)

	// The plugin has run (and misbehaved) at least once.
	if a.before {
		h.waitStat("plugins.bad.before.value", func(v float64) bool { return v >= 1 }, "guest's event before the attack")
	} else {
		time.Sleep(300 * time.Millisecond)
	}

	// While it misbehaves, a worker's events all arrive and scrapes work.
	// 1000 of each kind fit the ring in one burst: any loss is the host's.
	const n = 1000
	w := worker(t, h.shm, "-n", "1000", "-hold")
	h.waitStat("test.requests.value", eq(n), "worker drained beside the plugin")
	for i := 0; i < 3; i++ {
		if m := h.get("/metrics"); !bytes.Contains(m, []byte("\ntest_requests 1000\n")) {
			t.Fatalf("/metrics lacks the worker's counter:\n%s", tail(string(m), 2000))
		}
	}
	h.waitStat("test.ticks.value", func(v float64) bool { return v >= 10 }, "worker still drained")

	if len(a.kinds) > 0 {
		// The plugin keeps failing, is counted and restarted.
		h.waitFor("plugin failures counted and the plugin restarted", func(s map[string]any) bool {
			r, _ := lookup(s, badSeg+"restarts.value")
			return a.failures(s) >= 2 && r >= 2
		})
	} else {
		// The plugin's calls keep succeeding, its host calls refused.
		h.waitStat(badSeg+"rejected.value", func(v float64) bool { return v >= 3 }, "host calls refused")
		h.waitStat(badSeg+"calls.value", func(v float64) bool { return v >= 3 }, "plugin called")
		all := attack{kinds: []string{"trap", "timeout", "crash", "memory", "protocol"}}
		if n := all.failures(h.stats()); n != 0 {
			t.Errorf("%v plugin failures, want 0", n)
		}
	}

	st := h.stats()
	var counts []string
	for _, k := range []string{"trap", "timeout", "crash", "memory", "protocol"} {
		v, _ := lookup(st, badSeg+"errors."+k+".value")
		counts = append(counts, fmt.Sprintf("%s=%v", k, v))
	}
	h.stats0 = st
	r, _ := lookup(st, badSeg+"restarts.value")
	d, _ := lookup(st, badSeg+"output_dropped_bytes.value")
	t.Logf("plugin errors %s, restarts %v, output dropped %v bytes", strings.Join(counts, " "), r, d)

	if err := w.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(); err != nil {
		t.Fatalf("worker: %v", err)
	}
	h.waitStat("test.stopped.value", eq(1), "worker's last event drained")
	h.waitStat("tapes.host.shm.dropped.all.value", eq(0), "no event dropped")

	// SIGTERM: exit 0, soon, with a last report.
	sent := time.Now()
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.waited:
		if err != nil {
			t.Fatalf("tapes-host exit: %v\nstderr:\n%s", err, tail(h.stderr(), 4000))
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("tapes-host still running 15s after SIGTERM\nstderr:\n%s", tail(h.stderr(), 4000))
	}
	took := time.Since(sent)
	t.Logf("SIGTERM to exit: %v", took)
	if took > 5*time.Second {
		t.Errorf("SIGTERM to exit took %v, want a few seconds at most", took)
	}
	last := lastReport(t, stream)
	if ts, err := time.Parse(time.RFC3339Nano, last.Timestamp); err != nil || ts.Before(sent) {
		t.Errorf("last report at %q (%v), before SIGTERM at %v", last.Timestamp, err, sent)
	}
	if v, _ := lookup(last.Stats, "test.requests.value"); v != n {
		t.Errorf("last report: test.requests = %v, want %d", v, n)
	}
	if v, _ := lookup(last.Stats, "test.stopped.value"); v != 1 {
		t.Errorf("last report: test.stopped = %v, want 1", v)
	}
	if hostCrashLine.MatchString(h.stderr()) {
		t.Errorf("host stderr holds a Go panic or fatal error of its own:\n%s", tail(h.stderr(), 4000))
	}
	return h
}

type report struct {
	Timestamp string         `json:"timestamp"`
	Stats     map[string]any `json:"stats"`
}

func lastReport(t *testing.T, path string) report {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last report
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		last = report{}
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("stream line: %v", err)
		}
	}
	return last
}

func TestPluginAttackRefNullLoop(t *testing.T) {
	runAttack(t, attack{wasm: handWasm(t, "refnull-loop", refNullLoopWasm()), kinds: []string{"timeout"}})
}

func TestPluginAttackRecursion(t *testing.T) {
	// Deep recursion ends in a stack-overflow trap, or in the process
	// running out of its memory budget first.
	runAttack(t, attack{wasm: hostileC(t, "RECURSE", true), kinds: []string{"trap", "memory"}, before: true})
}

func TestPluginAttackFib(t *testing.T) {
	runAttack(t, attack{wasm: hostileC(t, "FIB", true), kinds: []string{"timeout"}, before: true})
}

func TestPluginAttackHugeBatches(t *testing.T) {
	runAttack(t, attack{wasm: hostileC(t, "BATCH", true), kinds: []string{"timeout"}, before: true})
}

func TestPluginAttackTableGrow(t *testing.T) {
	runAttack(t, attack{wasm: handWasm(t, "table-grow", tableGrowWasm()), kinds: []string{"memory", "trap"}})
}

func TestPluginAttackGoSleep(t *testing.T) {
	wasm := builds.Path(t, "gosleep.wasm", testenv.GoWasm(".", "./tests/testdata/plugins/gosleep", "c-shared"))
	runAttack(t, attack{wasm: wasm, kinds: []string{"timeout"}, before: true})
}

func TestPluginAttackStderrFlood(t *testing.T) {
	h := runAttack(t, attack{wasm: hostileC(t, "STDERR", true), kinds: []string{"timeout"}, before: true})
	// Each call writes without end for its 200ms; the host logged at most
	// a bounded share of it and counted the rest.
	if n := len(h.stderr()); n > 2<<20 {
		t.Errorf("host stderr grew to %d bytes", n)
	}
	if d, _ := lookup(h.stats0, badSeg+"output_dropped_bytes.value"); d == 0 {
		t.Error("no output counted as dropped")
	}
	if !strings.Contains(h.stderr(), "plugin output") {
		t.Errorf("no plugin output logged:\n%s", tail(h.stderr(), 2000))
	}
}

func TestPluginAttackCommandSpin(t *testing.T) {
	runAttack(t, attack{wasm: hostileC(t, "START_SPIN", false), kinds: []string{"timeout"}, before: true})
}

// A module without memory: its define fails with StatusMemory, counted as
// rejected, and nothing faults (wazero's Memory() is a non-nil interface
// holding nil for it).
func TestPluginNoMemory(t *testing.T) {
	runAttack(t, attack{wasm: handWasm(t, "no-memory", noMemoryWasm())})
}

// Plugin configuration is checked before anything starts.
func TestPluginConfigRules(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "p.wasm"), noMemoryWasm(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pa, pb := filepath.Join(a, "p.wasm"), filepath.Join(b, "p.wasm")
	cfg := filepath.Join(dir, "c.json")
	if err := os.WriteFile(cfg, []byte(`{"plugin": ["`+pa+`=x.y", "`+pb+`=x.y.z"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-plugin", pa, "-plugin", pb}, "explicit prefix"},
		{[]string{"-plugin", pa + "=x", "-plugin", pb + "=x"}, "both use the prefix"},
		{[]string{"-config", cfg}, "one prefix is under the other"},
		{[]string{"-plugin", pa + "=tapes.host"}, "reserved for the host"},
		{[]string{"-plugin", pa + "=tapes"}, "reserved for the host"},
		{[]string{"-plugin", pa + "=a.b", "-plugin", pb + "=a_b"}, "self-metrics"},
		{[]string{"-plugin", pa + "="}, "empty prefix"},
		// A valid 240-byte prefix whose self-metric names would pass 255
		// bytes: it crashed the host after the shm file was created.
		{[]string{"-plugin", pa + "=" + strings.Repeat("p", 240)}, "fit the 255-byte name limit"},
	} {
		cmd := exec.Command(hostBin(t), append([]string{"-shm", filepath.Join(dir, "never.shm"), "-http", ""}, c.args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errorsAs(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: exit %v, output %q; want exit 2 and %q", c.args, err, out, c.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "never.shm")); err == nil {
			t.Fatalf("%v: the shm file was created before the configuration was refused", c.args)
		}
	}
	// Explicit prefixes make the same file name twice fine.
	h := startHost(t, "-shm", filepath.Join(dir, "ok.shm"), "-http", "127.0.0.1:0",
		"-plugin", pa+"=p.one", "-plugin", pb+"=p.two", "-plugin-interval", "100ms")
	h.waitStat("tapes.host.plugins.p_one.calls.value", func(v float64) bool { return v >= 2 }, "first plugin called")
	h.waitStat("tapes.host.plugins.p_two.calls.value", func(v float64) bool { return v >= 2 }, "second plugin called")
	h.stop(syscall.SIGTERM)
}

func errorsAs(err error, target **exec.ExitError) bool { return errors.As(err, target) }

// childrenOf lists the pids whose parent is pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range ents {
		var p int
		if _, err := fmt.Sscanf(e.Name(), "%d", &p); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		var ppid int
		if len(f) > 1 {
			fmt.Sscanf(f[1], "%d", &ppid)
		}
		if ppid == pid {
			kids = append(kids, p)
		}
	}
	return kids
}

// A plugin process never outlives its host, even one killed with SIGKILL
// while the plugin spins in a call.
func TestPluginProcessDiesWithHost(t *testing.T) {
	dir := t.TempDir()
	h := startHost(t, "-shm", filepath.Join(dir, "k.shm"), "-http", "127.0.0.1:0",
		"-plugin", handWasm(t, "refnull-loop", refNullLoopWasm())+"=plugins.bad",
		"-plugin-timeout", "1h", "-plugin-interval", "100ms", "-wasm-cache", filepath.Join(dir, "cache"))
	h.waitStat(badSeg+"calls.value", func(v float64) bool { return v >= 2 }, "plugin spinning in its first collect")
	kids := childrenOf(t, h.cmd.Process.Pid)
	if len(kids) != 1 {
		t.Fatalf("host has %d child processes, want 1 plugin process", len(kids))
	}
	t.Cleanup(func() { syscall.Kill(kids[0], syscall.SIGKILL) }) // if the test fails
	killed := time.Now()
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-h.waited
	defer func() { t.Logf("plugin process gone %v after its host was killed", time.Since(killed)) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The killed child may stay a zombie until init reaps it.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", kids[0]))
		s := string(b)
		if err != nil || strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0] == "Z" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin process %d still running 10s after its host was killed: %s", kids[0], b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
