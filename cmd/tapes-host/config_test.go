package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
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
	for _, want := range []string{"SIGHUP", "-log-level and -interval", "/healthz", "/readyz", "-log-format", "-version"} {
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
