package main

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapes-go/tapes/wire"
)

func TestReloadAppliesReloadableSettingsOnly(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.json")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"log-level": "info", "interval": "10s", "slots": 8}`)
	args := []string{"-config", file, "-shm", filepath.Join(dir, "x.shm"), "-namespace", "cli"}
	parse := parserOf(args)
	fs, cfg, _, err := parse(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := newLogger(cfg, &logs)
	rl := &reloader{log: log, cur: fs, cfg: cfg, h: &host{cfg: cfg}, parse: parse}

	// A change to reloadable and to fixed settings; the command line still
	// wins over the file (namespace).
	write(`{"log-level": "debug", "interval": "2s", "slots": 16, "namespace": "file"}`)
	rl.reload()
	if cfg.levelVar.Level() != slog.LevelDebug || cfg.interval != 2*time.Second {
		t.Errorf("after reload: level %v interval %v, want debug 2s", cfg.levelVar.Level(), cfg.interval)
	}
	if cfg.slots != 8 || cfg.namespace != "cli" {
		t.Errorf("after reload: slots %d namespace %q: a fixed setting changed", cfg.slots, cfg.namespace)
	}
	out := logs.String()
	for _, want := range []string{"needs a restart", "setting=slots running=8 file=16", "applied=\"interval=2s log-level=debug\"", "needs_restart=slots"} {
		if !strings.Contains(out, want) {
			t.Errorf("reload log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "setting=namespace") {
		t.Errorf("namespace is set on the command line, which wins: no change to report\n%s", out)
	}

	// A broken file changes nothing.
	logs.Reset()
	write(`{"log-level": "shout"}`)
	rl.reload()
	if cfg.levelVar.Level() != slog.LevelDebug || !strings.Contains(logs.String(), "configuration not reloaded") {
		t.Errorf("a broken file: level %v, log:\n%s", cfg.levelVar.Level(), logs.String())
	}
	logs.Reset()
	write(`{"log-level": "warn"}`)
	rl.reload()
	log.Info("hidden")
	if strings.Contains(logs.String(), "hidden") {
		t.Errorf("log level warn after reload, but an info record was written:\n%s", logs.String())
	}
}

// SIGHUP re-reads the -mapping file under the same path into the Mapper
// every output holds; a file that no longer parses changes nothing.
func TestReloadRereadsMapping(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mapping.yml")
	write := func(name string) {
		t.Helper()
		if err := os.WriteFile(file, []byte("mappings:\n  - match: \"api.*.latency\"\n    name: \""+name+"\"\n    labels:\n      route: \"$1\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("api_latency_v1")
	args := []string{"-shm", filepath.Join(dir, "x.shm"), "-mapping", file}
	parse := parserOf(args)
	fs, cfg, _, err := parse(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	held := cfg.mapper // what the outputs were given at start
	name := func() string {
		r, ok := held.Map("api.index.latency", wire.KindTimer)
		if !ok || len(r.Labels) != 1 || r.Labels[0].Value != "index" {
			t.Fatalf("mapping result %+v, %v", r, ok)
		}
		return r.Name
	}
	if got := name(); got != "api_latency_v1" {
		t.Fatalf("at start: %q", got)
	}
	var logs bytes.Buffer
	rl := &reloader{log: newLogger(cfg, &logs), cur: fs, cfg: cfg, h: &host{cfg: cfg}, parse: parse}
	write("api_latency_v2")
	rl.reload()
	if got := name(); got != "api_latency_v2" {
		t.Errorf("after SIGHUP: %q, want api_latency_v2\n%s", got, logs.String())
	}
	if err := os.WriteFile(file, []byte("mappings:\n  - match: \"api..x\"\n    name: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rl.reload()
	if got := name(); got != "api_latency_v2" {
		t.Errorf("a broken file changed the mapping: %q", got)
	}
	if !strings.Contains(logs.String(), "configuration not reloaded") || !strings.Contains(logs.String(), "-mapping") {
		t.Errorf("a broken mapping file was not reported:\n%s", logs.String())
	}
}

// parserOf is the reloader's parse for a host started with args: the
// command line again, and the -config file as it is now.
func parserOf(args []string) func(out io.Writer) (*flag.FlagSet, *config, []string, error) {
	return func(out io.Writer) (*flag.FlagSet, *config, []string, error) {
		c := &config{}
		fs := newFlagSet("tapes-host", c, out)
		rest, err := parseFlags(fs, c, args, out, usageHeader)
		return fs, c, rest, err
	}
}
