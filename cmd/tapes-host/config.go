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
	"github.com/tapes-go/tapes/reporters/mapping"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/wire"
)

// config is everything tapes-host can be told, from flags or a config file.
type config struct {
	shmPath     string
	shmMemfd    bool // run: a sealed memfd instead of shmPath (set by run, not a flag)
	slots       int
	ringRecords int
	maxMetrics  int
	shmWindow   time.Duration

	httpAddr  string
	namespace string

	// Prometheus exposition of /metrics (http.go; flags in promflags.go).
	prom promFlags
	// mapping is -mapping FILE; mapper (never nil once validated) names
	// and labels metrics in every labelled output (/metrics, remote write,
	// OTLP), and a SIGHUP re-reads the file into it (Mapper.Replace).
	mapping string
	mapper  *mapping.Mapper

	// HTTP hardening (see httpserver.Options).
	httpCache             time.Duration
	httpReadHeaderTimeout time.Duration
	httpReadTimeout       time.Duration
	httpWriteTimeout      time.Duration
	httpIdleTimeout       time.Duration
	httpMaxHeaderBytes    int
	httpMaxConns          int

	statsdAddr   string
	statsdPrefix string
	interval     time.Duration

	stream string
	push   pushFlags // push.go: remote write and OTLP

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
	path     string
	prefix   string
	explicit bool // the prefix was given, not derived from the file name
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
	path, prefix, explicit := strings.Cut(v, "=")
	if path == "" {
		return errors.New("empty plugin path")
	}
	if explicit && prefix == "" {
		return fmt.Errorf("%s: empty prefix after '='", path)
	}
	if !explicit {
		base := path[strings.LastIndexAny(path, `/\`)+1:]
		base = strings.TrimSuffix(base, ".wasm")
		prefix = "plugins." + sanitizeSegment(base)
	}
	*p = append(*p, pluginSpec{path: path, prefix: prefix, explicit: explicit})
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
	fs.DurationVar(&c.shmWindow, "shm-window", 1500*time.Microsecond, "when workers' events come back to back, how long the host lets them gather before its next pass: an event then waits half of it on average, and the host wakes once per window instead of once per event (shorter: lower latency under a steady trickle, more host CPU with many workers)")
	fs.IntVar(&c.maxMetrics, "max-metrics", 100000, "most metrics the host registry holds; names beyond it are rejected and counted. With the histogram bucket cap, a histogram or timer holds at most ~80 KiB whatever its values (~200 KiB with 4 contention cells), so this bounds the registry's memory (docs/core.md, Memory)")
	fs.StringVar(&c.httpAddr, "http", "127.0.0.1:8889", "serve /metrics (Prometheus) and /stats (JSON) here; empty disables; a missing host (:PORT) means 127.0.0.1, 0.0.0.0:PORT listens on all interfaces")
	fs.StringVar(&c.namespace, "namespace", "", "prefix for Prometheus metric names")
	fs.StringVar(&c.mapping, "mapping", "", "a prometheus/statsd_exporter mapping file (YAML: glob or regex matches on the dotted names, name, labels with $1 captures, help, action: drop, match_metric_type) that names and labels metrics in /metrics, remote write and OTLP; unmatched names keep their names; re-read on SIGHUP")
	c.prom.declare(fs)
	fs.DurationVar(&c.httpCache, "http-cache", time.Second, "concurrent scrapes of /metrics or /stats share one rendering at most this old (and at most -interval; one render per period however many scrapers); 0: one render per wave of concurrent scrapes, never older than the scrape")
	fs.IntVar(&c.httpMaxConns, "http-max-conns", httpserver.DefaultMaxConns, "most open HTTP connections (also capped at 3/4 of the fd limit); at the cap a new connection closes the longest-waiting idle or slow one")
	fs.DurationVar(&c.httpReadHeaderTimeout, "http-read-header-timeout", httpserver.DefaultReadHeaderTimeout, "close a connection that has not sent complete request headers within this time (slowloris)")
	fs.DurationVar(&c.httpReadTimeout, "http-read-timeout", httpserver.DefaultReadTimeout, "most time to read a whole request")
	fs.DurationVar(&c.httpWriteTimeout, "http-write-timeout", httpserver.DefaultWriteTimeout, "most time from a request's headers to the end of its response, however slowly the client reads")
	fs.DurationVar(&c.httpIdleTimeout, "http-idle-timeout", httpserver.DefaultIdleTimeout, "close a keep-alive connection idle this long")
	fs.IntVar(&c.httpMaxHeaderBytes, "http-max-header-bytes", httpserver.DefaultMaxHeaderBytes, "most bytes of request headers")
	fs.StringVar(&c.statsdAddr, "statsd", "", "push to this StatsD server (host:port, UDP); empty disables")
	fs.StringVar(&c.statsdPrefix, "statsd-prefix", "", "prefix for StatsD metric names")
	fs.DurationVar(&c.interval, "interval", 10*time.Second, "how often push reporters (StatsD, stream) report (reloaded on SIGHUP)")
	addPushFlags(fs, &c.push)
	fs.StringVar(&c.stream, "stream", "", "write one JSON document per interval: '-' for stdout or a file path; empty disables")
	fs.Var(&c.plugins, "plugin", "run a WebAssembly plugin in its own process: path.wasm[=prefix] (repeatable; default prefix plugins.<file name>; prefixes must be distinct, neither under another nor under tapes); self-metrics under tapes.host.plugins.<prefix with _ for .>")
	fs.DurationVar(&c.pluginInterval, "plugin-interval", 10*time.Second, "how often collector plugins' tapes_collect export is called")
	fs.DurationVar(&c.pluginTimeout, "plugin-timeout", time.Second, "deadline of every plugin call (_initialize, tapes_collect with the tapes_flush after it, a command's _start); a plugin process past it is killed and restarted with backoff (100ms doubling to 1m)")
	fs.IntVar(&c.pluginMemory, "plugin-memory", 256, "linear memory limit of a plugin, in 64 KiB pages; its process may use this plus 192 MiB (Go runtime, compiled code, stack) and is killed beyond it")
	fs.IntVar(&c.pluginPool, "plugin-pool", 2, "ignored, kept for old configs: each plugin runs in one process, one call at a time")
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
	if err := c.validateHTTP(); err != nil {
		return err
	}
	if err := c.prom.validate(); err != nil {
		return err
	}
	if err := validatePlugins(c.plugins); err != nil {
		return err
	}
	if err := c.push.validate(); err != nil {
		return err
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

// validatePlugins checks what the plugins' prefixes must hold before any
// process starts: each a valid name, none in the host's own tapes.*, none
// equal to or under another (their guests' metrics would mix), and
// distinct self-metric segments.
func validatePlugins(ps []pluginSpec) error {
	segs := map[string]string{}
	for i, p := range ps {
		if _, err := os.Stat(p.path); err != nil {
			return fmt.Errorf("-plugin %s: %w", p.path, err)
		}
		if err := wire.ValidateName(p.prefix); err != nil {
			return fmt.Errorf("-plugin %s: prefix: %w", p.path, err)
		}
		if wire.Under(p.prefix, shm.ReservedPrefix) {
			return fmt.Errorf("-plugin %s: prefix %q: tapes.* is reserved for the host's own metrics", p.path, p.prefix)
		}
		if longest := pluginMetricName(pluginSegment(p.prefix), longestPluginMetric); len(longest) > wire.MaxNameLen {
			return fmt.Errorf("-plugin %s: prefix %q: at most %d bytes, so that its self-metrics (%s...) fit the %d-byte name limit",
				p.path, p.prefix, len(p.prefix)-(len(longest)-wire.MaxNameLen), longest[:40], wire.MaxNameLen)
		}
		for _, q := range ps[:i] {
			switch {
			case p.prefix == q.prefix && !p.explicit && !q.explicit:
				return fmt.Errorf("-plugin %s and %s: both get the default prefix %q from their file name; give one an explicit prefix (path.wasm=prefix)", q.path, p.path, p.prefix)
			case p.prefix == q.prefix:
				return fmt.Errorf("-plugin %s and %s: both use the prefix %q; each plugin needs its own", q.path, p.path, p.prefix)
			case wire.Under(p.prefix, q.prefix) || wire.Under(q.prefix, p.prefix):
				return fmt.Errorf("-plugin %s (%q) and %s (%q): one prefix is under the other; their metrics would mix", q.path, q.prefix, p.path, p.prefix)
			}
		}
		seg := pluginSegment(p.prefix)
		if other, ok := segs[seg]; ok {
			return fmt.Errorf("-plugin %s: prefix %q: its self-metrics tapes.host.plugins.%s would be those of %s; choose another prefix", p.path, p.prefix, seg, other)
		}
		segs[seg] = p.path
	}
	return nil
}

// under reports whether name is root or a path below it.
// validateHTTP checks the HTTP hardening flags: each must be set to a real
// bound (a flag cannot switch a guard off).
func (c *config) validateHTTP() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"-http-read-header-timeout", c.httpReadHeaderTimeout},
		{"-http-read-timeout", c.httpReadTimeout},
		{"-http-write-timeout", c.httpWriteTimeout},
		{"-http-idle-timeout", c.httpIdleTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%s %v: must be positive", d.name, d.v)
		}
	}
	switch {
	case c.httpCache < 0:
		return fmt.Errorf("-http-cache %v: must not be negative", c.httpCache)
	case c.httpMaxConns < 1:
		return fmt.Errorf("-http-max-conns %d: must be at least 1", c.httpMaxConns)
	case c.httpMaxHeaderBytes < 1024:
		return fmt.Errorf("-http-max-header-bytes %d: must be at least 1024", c.httpMaxHeaderBytes)
	}
	return nil
}
