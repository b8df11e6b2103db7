package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
)

const unitFile = "../dist/systemd/tapes-host.service"

// unitValues returns the values of key in the unit file, in order.
func unitValues(t *testing.T, unit, key string) []string {
	t.Helper()
	var vals []string
	for _, line := range strings.Split(unit, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == key {
			vals = append(vals, strings.TrimSpace(v))
		}
	}
	return vals
}

// The unit passes systemd-analyze verify (with ExecStart pointed at the
// built binary: verify checks that it exists), and a unit with a mistake
// does not, so the check is not vacuous.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze := testenv.Tool(t, "systemd-analyze", "systemd")
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(b), "/usr/local/bin/tapes-host", hostBin(t))
	verify := func(text string) (string, error) {
		dir := t.TempDir()
		path := filepath.Join(dir, "tapes-host.service")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(unit); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify prints a line for a value it cannot parse (and exits 0: the
	// unit would start without it), and exits non-zero on a fatal error.
	if out, _ := verify(strings.Replace(unit, "ProtectSystem=strict", "ProtectSystem=stricter", 1)); !strings.Contains(out, "stricter") {
		t.Errorf("verify said nothing about ProtectSystem=stricter: the check cannot fail\n%s", out)
	}
	if out, err := verify(strings.Replace(unit, "ExecStart="+hostBin(t), "ExecStart=tapes-host-relative", 1)); err == nil {
		t.Errorf("verify accepted a relative ExecStart\n%s", out)
	}
}

// The unit's ExecStart and ExecReload, run as systemd would run them: the
// flags are valid, the host comes up ready, reload is a SIGHUP it survives,
// and the shm file is where Environment=TAPES_SHM tells workers to look.
func TestSystemdUnitCommands(t *testing.T) {
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	dir := t.TempDir()
	run := filepath.Join(dir, "run", "tapes") // RuntimeDirectory=tapes, mode 0700
	if err := os.MkdirAll(run, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "tapes-host.json")
	writeFile(t, cfg, `{"http": "127.0.0.1:0", "log-level": "info"}`)
	start := unitValues(t, unit, "ExecStart")
	env := unitValues(t, unit, "Environment")
	if len(start) != 1 || !strings.Contains(strings.Join(env, " "), "TAPES_SHM=/run/tapes/metrics.shm") {
		t.Fatalf("ExecStart %q, Environment %q", start, env)
	}
	args := strings.Fields(start[0])[1:]
	for i, a := range args {
		a = strings.ReplaceAll(a, "/run/tapes", run)
		args[i] = strings.ReplaceAll(a, "/etc/tapes/tapes-host.json", cfg)
	}
	if got := unitValues(t, unit, "RuntimeDirectory"); len(got) != 1 || got[0] != "tapes" {
		t.Errorf("RuntimeDirectory %q, want tapes (for /run/tapes)", got)
	}
	h := startHost(t, args...)
	if h.shm != filepath.Join(run, "metrics.shm") {
		t.Errorf("shm file %s, want %s", h.shm, filepath.Join(run, "metrics.shm"))
	}
	// The endpoints are printed before plugins and reporters are up:
	// readiness comes after.
	waitReady(t, h)
	reload := unitValues(t, unit, "ExecReload")
	if len(reload) != 1 {
		t.Fatalf("ExecReload %q", reload)
	}
	argv := strings.Fields(strings.ReplaceAll(reload[0], "$MAINPID", strconv.Itoa(h.cmd.Process.Pid)))
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("ExecReload %q: %v %s", argv, err, out)
	}
	waitFor(t, 20*time.Second, "reload logged", func() bool {
		return strings.Contains(h.stderr(), `"msg":"SIGHUP: configuration reloaded"`)
	}, h.stderr)
	if code, _ := probe(t, h.addr, "/healthz"); code != 200 {
		t.Errorf("/healthz %d after ExecReload", code)
	}
	h.stop(syscall.SIGTERM) // KillSignal
}
