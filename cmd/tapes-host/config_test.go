package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Every invalid setting is refused before anything is created: exit 2, one
// line on stderr naming the flag, and no shm file.
func TestInvalidSettingsCreateNothing(t *testing.T) {
	dir := t.TempDir()
	shmPath := filepath.Join(dir, "v.shm")
	wasmDir := filepath.Join(dir, "plugin.wasm")
	if err := os.Mkdir(wasmDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "c.json")
	if err := os.WriteFile(cfgFile, []byte(`{"http": "127.0.0.1:70000"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-http", "127.0.0.1:99999"}, `-http "127.0.0.1:99999": port 99999 is out of range (0..65535)`},
		{[]string{"-http", "127.0.0.1:http-alt"}, `-http "127.0.0.1:http-alt": port "http-alt" is not a number`},
		{[]string{"-http", "127.0.0.1"}, `-http "127.0.0.1": want host:port: missing port in address`},
		{[]string{"-config", cfgFile}, `-http "127.0.0.1:70000": port 70000 is out of range`},
		{[]string{"-statsd", "127.0.0.1:0"}, `-statsd "127.0.0.1:0": port 0 is not a destination`},
		{[]string{"-statsd", "127.0.0.1:65536"}, `-statsd "127.0.0.1:65536": port 65536 is out of range`},
		{[]string{"-statsd-prefix", "a..b"}, `-statsd-prefix "a..b": `},
		{[]string{"-namespace", "9ns"}, `-namespace "9ns": "9ns": name cannot be expressed`},
		{[]string{"-slots", "5000"}, "-slots 5000: at most 4096"},
		{[]string{"-ring", "1"}, "-ring 1: must be a power of two in 2..16777216"},
		{[]string{"-shm-window", "10us"}, "-shm-window 10µs: must be from 100µs to 100ms"},
		{[]string{"-shm-window", "1s"}, "-shm-window 1s: must be from 100µs to 100ms"},
		{[]string{"-ring", "33554432"}, "-ring 33554432: must be a power of two in 2..16777216"},
		{[]string{"-interval", "0s"}, "-interval 0s: must be positive"},
		{[]string{"-stream", filepath.Join(dir, "no", "such", "f.jsonl")}, "-stream " + filepath.Join(dir, "no", "such", "f.jsonl") + ": directory " + filepath.Join(dir, "no", "such") + ": no such file or directory"},
		{[]string{"-stream", dir}, "-stream " + dir + ": is a directory"},
		{[]string{"-plugin", wasmDir}, "-plugin " + wasmDir + ": not a regular file"},
		{[]string{"-log-format", "xml"}, `-log-format "xml": want text or json`},
		{[]string{"-log-level", "loud"}, `invalid value "loud" for flag -log-level`},
		{[]string{"run", "--", filepath.Join(dir, "nonexistent")}, "cannot run " + filepath.Join(dir, "nonexistent") + ": no such file or directory"},
		{[]string{"run", "--", cfgFile}, "cannot run " + cfgFile + ": permission denied"},
		{[]string{"run", "-restart-limit", "-1", "--", "true"}, "-restart-limit -1: must not be negative"},
		{[]string{"run", "-restart-window", "0s", "--", "true"}, "-restart-window 0s: must be positive"},
		{[]string{"run", "--", "no-such-command-tapes"}, `cannot run no-such-command-tapes: executable file not found in $PATH`},
		{[]string{"version", "extra"}, `unexpected arguments "extra"`},
		{[]string{"-wasm-cache", cfgFile}, "-wasm-cache " + cfgFile + ": not a directory"},
		{[]string{"demo", "-duration", "-1s"}, "-duration -1s: must not be negative"},
	} {
		args := append([]string{}, tc.args...)
		// -shm goes before "--" (and after the subcommand).
		at := 0
		if len(args) > 0 && (args[0] == "run" || args[0] == "version" || args[0] == "demo") {
			at = 1
		}
		if args[0] != "version" {
			args = append(args[:at], append([]string{"-shm", shmPath}, args[at:]...)...)
		}
		var stdout, stderr bytes.Buffer
		// Cancelled: a setting that wrongly passes starts the host, which
		// stops at once (exit 0, shm file created) instead of serving on.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		code := mainCode(ctx, args, &stdout, &stderr)
		os.Remove(shmPath)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s", tc.args, code, stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "tapes-host: ") || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%q: stderr %q, want one line containing %q", tc.args, stderr.String(), tc.want)
		}
		if strings.Contains(lines[0], "shm: shm:") || strings.Contains(lines[0], ": : ") {
			t.Errorf("%q: stuttering error %q", tc.args, lines[0])
		}
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"version"}, {"run", "-version"}, {"demo", "-version"}} {
		var stdout, stderr bytes.Buffer
		if code := mainCode(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Errorf("%q: exit %d: %s", args, code, stderr.String())
		}
		out := stdout.String()
		if !strings.HasPrefix(out, "tapes-host ") || !strings.Contains(out, runtime.Version()) {
			t.Errorf("%q printed %q", args, out)
		}
	}
}

func TestHelpNamesReloadableSettings(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := mainCode(context.Background(), []string{"-h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	for _, want := range []string{"SIGHUP", "-log-level, -interval and the mapping", "/healthz", "/readyz", "-log-format", "-version"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("-h lacks %q", want)
		}
	}
	for name := range reloadable {
		if !strings.Contains(stderr.String(), "-"+name) {
			t.Errorf("reloadable setting %s not in -h", name)
		}
	}
}

// parse parses a serving command's flags in-process, as main does.
func parse(t *testing.T, args ...string) (*config, error) {
	t.Helper()
	c, _, err := parseServeFlags("tapes-host", args, io.Discard, "")
	return c, err
}

// writeFile writes data to a new file under dir and returns its path.
func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A config file fills in what the command line did not set, lists set a
// repeatable flag once per element, and the command line wins where both
// set a flag.
func TestConfigFileAndCommandLine(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "auth.wasm", "")
	b := writeFile(t, dir, "my plugin.v2.wasm", "")
	cfg := writeFile(t, dir, "c.json", `{
		"interval": "3s", "statsd": "127.0.0.1:8125", "statsd-prefix": "svc",
		"max-metrics": 500, "log-level": "debug", "http": ":9091",
		"plugin": [`+strconv.Quote(a)+`, `+strconv.Quote(b+"=team.x")+`]
	}`)
	c, err := parse(t, "-config", cfg, "-interval", "7s", "-shm", filepath.Join(dir, "m.shm"))
	if err != nil {
		t.Fatal(err)
	}
	if c.interval != 7*time.Second {
		t.Errorf("interval %v: the command line's 7s must win over the file's 3s", c.interval)
	}
	if c.statsdAddr != "127.0.0.1:8125" || c.statsdPrefix != "svc" || c.maxMetrics != 500 || c.logLevel != slog.LevelDebug {
		t.Errorf("from the file: statsd %q prefix %q max-metrics %d log-level %v", c.statsdAddr, c.statsdPrefix, c.maxMetrics, c.logLevel)
	}
	if c.httpAddr != "127.0.0.1:9091" {
		t.Errorf("-http :9091 became %q, want loopback 127.0.0.1:9091", c.httpAddr)
	}
	want := pluginList{{path: a, prefix: "plugins.auth"}, {path: b, prefix: "team.x", explicit: true}}
	if !reflect.DeepEqual(c.plugins, want) {
		t.Errorf("plugins %+v, want %+v", c.plugins, want)
	}

	// Without the file, the defaults hold.
	c, err = parse(t, "-shm", filepath.Join(dir, "m.shm"))
	if err != nil {
		t.Fatal(err)
	}
	if c.interval != 10*time.Second || c.httpAddr != "127.0.0.1:8889" || c.maxMetrics != 100000 || len(c.plugins) != 0 {
		t.Errorf("defaults: interval %v http %q max-metrics %d plugins %v", c.interval, c.httpAddr, c.maxMetrics, c.plugins)
	}
}

// A config file is read strictly: anything that is not a known flag with a
// scalar value (or a list of them) is refused with the file and the key
// named, and nothing of it is half-applied into a running host.
func TestConfigFileRefusals(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ body, want string }{
		{`{"intervall": "1s"}`, `unknown setting "intervall"`},
		{`{"config": "other.json"}`, `unknown setting "config"`},
		{`{"interval": {"s": 1}}`, `"interval": want a string, number or boolean, got map[string]interface {}`},
		{`{"plugin": [["a.wasm"]]}`, `"plugin": want a string, number or boolean, got []interface {}`},
		{`{"slots": "many"}`, `"slots": parse error`},
		{`["interval", "1s"]`, `not a JSON object`},
		{`{"interval": "1s"`, `not a JSON object`},
	} {
		cfg := writeFile(t, dir, "c.json", tc.body)
		_, err := parse(t, "-config", cfg, "-shm", filepath.Join(dir, "m.shm"))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), cfg) {
			t.Errorf("%s: error %v, want one naming %s and containing %q", tc.body, err, cfg, tc.want)
		}
	}
	missing := filepath.Join(dir, "none.json")
	if _, err := parse(t, "-config", missing); err == nil || !strings.Contains(err.Error(), "config: open "+missing) {
		t.Errorf("missing file: %v", err)
	}
}

// Plugin prefixes: derived from the file name when not given, and refused
// when two plugins' metrics (or self-metrics) would mix or a plugin would
// write into the host's own tapes.*.
func TestPluginPrefixRules(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	a := writeFile(t, dir, "a.wasm", "")
	a2 := writeFile(t, sub, "a.wasm", "")
	b := writeFile(t, dir, "b.wasm", "")
	odd := writeFile(t, dir, "x y+z.wasm", "")
	c, err := parse(t, "-shm", filepath.Join(dir, "m.shm"), "-plugin", odd, "-plugin", a+"=team.a", "-plugin", b+"=team.b")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.plugins[0].prefix; got != "plugins.x_y_z" {
		t.Errorf("default prefix of %q = %q, want plugins.x_y_z", odd, got)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{a, a2}, `both get the default prefix "plugins.a" from their file name`},
		{[]string{a + "=p.x", b + "=p.x"}, `both use the prefix "p.x"; each plugin needs its own`},
		{[]string{a + "=p", b + "=p.x"}, "one prefix is under the other"},
		{[]string{a + "=p.x.y", b + "=p.x"}, "one prefix is under the other"},
		{[]string{a + "=tapes.mine"}, "tapes.* is reserved"},
		{[]string{a + "=p.a_b", b + "=p_a.b"}, "self-metrics tapes.host.plugins.p_a_b would be those of " + a},
		{[]string{a + "=bad..name"}, "prefix: invalid metric name"},
		{[]string{a + "="}, "empty prefix after '='"},
		{[]string{a + "=" + strings.Repeat("p", 250)}, "so that its self-metrics"},
	} {
		args := []string{"-shm", filepath.Join(dir, "m.shm")}
		for _, p := range tc.args {
			args = append(args, "-plugin", p)
		}
		if _, err := parse(t, args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("-plugin %q: error %v, want %q", tc.args, err, tc.want)
		}
	}
}
