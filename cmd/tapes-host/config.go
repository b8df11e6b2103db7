package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/tapes-go/tapes/reporters/httpserver"
	"github.com/tapes-go/tapes/wire"
)

// config is everything tapes-host can be told, from flags or a config file.
type config struct {
	shmPath     string
	slots       int
	ringRecords int
	maxMetrics  int

	httpAddr  string
	namespace string

	statsdAddr   string
	statsdPrefix string
	interval     time.Duration

	stream string

	plugins        pluginList
	pluginInterval time.Duration
	pluginTimeout  time.Duration
	pluginMemory   int
	pluginPool     int
	wasmCache      string

	logLevel slog.Level
	config   string

	// Operations (validate.go, version.go, logging.go, reload.go).
	logFormat   string
	showVersion bool
	levelVar    *slog.LevelVar   // the running logger's level, changed by a reload
	supervise   *superviseConfig // run and demo: the supervisor's flags
}

// pluginSpec is one -plugin flag: path.wasm[=prefix].
type pluginSpec struct {
	path   string
	prefix string
}

type pluginList []pluginSpec

func (p *pluginList) String() string {
	var s []string
	for _, x := range *p {
		s = append(s, x.path+"="+x.prefix)
	}
	return strings.Join(s, ",")
}

func (p *pluginList) Set(v string) error {
	path, prefix, _ := strings.Cut(v, "=")
	if path == "" {
		return errors.New("empty plugin path")
	}
	if prefix == "" {
		base := path[strings.LastIndexAny(path, `/\`)+1:]
		base = strings.TrimSuffix(base, ".wasm")
		prefix = "plugins." + sanitizeSegment(base)
	}
	*p = append(*p, pluginSpec{path: path, prefix: prefix})
	return nil
}

// sanitizeSegment turns a file name into one valid name segment.
func sanitizeSegment(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "plugin"
	}
	return string(b)
}

type levelFlag struct{ l *slog.Level }

func (f levelFlag) String() string {
	if f.l == nil {
		return "info"
	}
	return strings.ToLower(f.l.String())
}
func (f levelFlag) Set(v string) error { return f.l.UnmarshalText([]byte(v)) }

// newFlagSet declares every flag of the serving commands (the default
// command, run and demo) on fs, writing into c.
func newFlagSet(name string, c *config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.config, "config", "", "read flags from this JSON file: an object of flag names to values (lists for -plugin); flags on the command line win")
	fs.StringVar(&c.shmPath, "shm", "", "shared-memory file workers write to (default $XDG_RUNTIME_DIR/tapes/metrics.shm, else /dev/shm/tapes-<uid>/metrics.shm)")
	fs.IntVar(&c.slots, "slots", 0, "worker slots in a new shm file (0: the shm package default)")
	fs.IntVar(&c.ringRecords, "ring", 0, "records per worker ring in a new shm file, a power of two (0: the shm package default)")
	fs.IntVar(&c.maxMetrics, "max-metrics", 100000, "most metrics the host registry holds; names beyond it are rejected and counted")
	fs.StringVar(&c.httpAddr, "http", "127.0.0.1:8889", "serve /metrics (Prometheus) and /stats (JSON) here; empty disables; a missing host (:PORT) means 127.0.0.1, 0.0.0.0:PORT listens on all interfaces")
	fs.StringVar(&c.namespace, "namespace", "", "prefix for Prometheus metric names")
	fs.StringVar(&c.statsdAddr, "statsd", "", "push to this StatsD server (host:port, UDP); empty disables")
	fs.StringVar(&c.statsdPrefix, "statsd-prefix", "", "prefix for StatsD metric names")
	fs.DurationVar(&c.interval, "interval", 10*time.Second, "how often push reporters (StatsD, stream) report (reloaded on SIGHUP)")
	fs.StringVar(&c.stream, "stream", "", "write one JSON document per interval: '-' for stdout or a file path; empty disables")
	fs.Var(&c.plugins, "plugin", "load a WebAssembly plugin: path.wasm[=prefix] (repeatable; default prefix plugins.<file name>)")
	fs.DurationVar(&c.pluginInterval, "plugin-interval", 10*time.Second, "how often collector plugins' tapes_collect export is called")
	fs.DurationVar(&c.pluginTimeout, "plugin-timeout", time.Second, "deadline of one plugin call; a guest over it is stopped and its instance replaced")
	fs.IntVar(&c.pluginMemory, "plugin-memory", 256, "memory limit of one plugin instance, in 64 KiB pages")
	fs.IntVar(&c.pluginPool, "plugin-pool", 2, "instances per plugin (an instance never runs two calls at once)")
	fs.StringVar(&c.wasmCache, "wasm-cache", "", "directory for wazero's compilation cache (default: the user cache directory)")
	fs.Var(levelFlag{&c.logLevel}, "log-level", "debug, info, warn or error (reloaded on SIGHUP)")
	// Operations flags.
	fs.StringVar(&c.logFormat, "log-format", "text", "log record format on stderr: text (logfmt) or json (one JSON object per line)")
	fs.BoolVar(&c.showVersion, "version", false, "print the version and build information and exit")
	return fs
}

// parseServeFlags parses the flags of a serving command; settings from
// -config fill in what the command line did not set.
func parseServeFlags(name string, args []string, out io.Writer, usage string) (*config, []string, error) {
	c := &config{}
	fs := newFlagSet(name, c, out)
	rest, err := parseFlags(fs, c, args, out, usage)
	return c, rest, err
}

// parseFlags parses args into fs, whose flags write into c. Errors come back
// as one line (usageError) instead of the flag package's usage dump; -h
// prints the usage and returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, c *config, args []string, out io.Writer, usage string) ([]string, error) {
	// The flag package prints the whole usage on any error; keep it quiet
	// and print it only for -h.
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, usage)
			fs.SetOutput(out)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, usageError{err}
	}
	if c.showVersion {
		return nil, errVersion
	}
	if c.config != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if err := applyConfigFile(fs, c.config, set); err != nil {
			return nil, usageError{err}
		}
	}
	if err := c.validate(); err != nil {
		return nil, usageError{err}
	}
	return fs.Args(), nil
}

func applyConfigFile(fs *flag.FlagSet, path string, onCommandLine map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var raw map[string]any
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("config %s: not a JSON object: %w", path, err)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("config %s: unknown setting %q (settings are the flag names; see -h)", path, k)
		}
		if onCommandLine[k] {
			continue
		}
		vals := []any{raw[k]}
		if list, ok := raw[k].([]any); ok {
			vals = list
		}
		for _, v := range vals {
			s, ok := scalar(v)
			if !ok {
				return fmt.Errorf("config %s: %q: want a string, number or boolean, got %T", path, k, v)
			}
			if err := fs.Set(k, s); err != nil {
				return fmt.Errorf("config %s: %q: %w", path, k, err)
			}
		}
	}
	return nil
}

func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return fmt.Sprint(x), true
	}
	return "", false
}

func (c *config) validate() error {
	switch {
	case c.slots < 0:
		return errors.New("-slots must not be negative")
	case c.ringRecords < 0 || c.ringRecords&(c.ringRecords-1) != 0:
		return fmt.Errorf("-ring %d: must be a power of two", c.ringRecords)
	case c.interval <= 0:
		return fmt.Errorf("-interval %v: must be positive", c.interval)
	case c.pluginInterval <= 0:
		return fmt.Errorf("-plugin-interval %v: must be positive", c.pluginInterval)
	case c.pluginTimeout <= 0:
		return fmt.Errorf("-plugin-timeout %v: must be positive", c.pluginTimeout)
	case c.pluginMemory < 1 || c.pluginMemory > 65536:
		return fmt.Errorf("-plugin-memory %d: must be 1..65536 pages", c.pluginMemory)
	case c.pluginPool < 1:
		return fmt.Errorf("-plugin-pool %d: must be at least 1", c.pluginPool)
	case c.maxMetrics < 1:
		return fmt.Errorf("-max-metrics %d: must be at least 1", c.maxMetrics)
	}
	for _, p := range c.plugins {
		if _, err := os.Stat(p.path); err != nil {
			return fmt.Errorf("-plugin %s: %w", p.path, err)
		}
		if err := wire.ValidateName(p.prefix); err != nil {
			return fmt.Errorf("-plugin %s: prefix: %w", p.path, err)
		}
	}
	if c.statsdAddr != "" {
		if err := checkPort(c.statsdAddr, false); err != nil {
			return fmt.Errorf("-statsd %q: %w", c.statsdAddr, err)
		}
	}
	if c.httpAddr != "" {
		if err := checkPort(c.httpAddr, true); err != nil {
			return fmt.Errorf("-http %q: %w", c.httpAddr, err)
		}
		// ":9090" means loopback, as for httpserver: exposing metrics to
		// the network takes an explicit 0.0.0.0 (or another address).
		addr, err := httpserver.ListenAddr(c.httpAddr)
		if err != nil {
			return fmt.Errorf("-http %q: want host:port: %w", c.httpAddr, errors.Unwrap(err))
		}
		c.httpAddr = addr
	}
	return c.validateOps()
}
