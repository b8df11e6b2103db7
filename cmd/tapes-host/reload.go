package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/tapes-go/tapes/reporters"
)

// reloadable are the settings SIGHUP applies to a running host. Everything
// else (the shm file and its geometry, listeners, sinks, the supervisor's
// settings) is owned by something created at start, and changing it under
// running workers or scrapers would lose data or break connections: a
// change to those is logged as needing a restart. Plugins can be swapped:
// each is a process recording through its own slot, so stopping them all
// and starting the new set loses nothing they committed.
var reloadable = map[string]bool{"log-level": true, "interval": true, "mapping": true,
	"plugin": true, "plugin-interval": true, "plugin-timeout": true, "plugin-memory": true, "wasm-cache": true,
	// push.go's pushSettings:
	"remote-write-url": true, "otlp-url": true, "push-timeout": true, "push-queue": true, "push-attempts": true,
	"remote-write-classic": true, "push-label": true, "otlp-service-name": true}

// pluginSettings are the reloadable settings that restart the plugins.
var pluginSettings = map[string]bool{"plugin": true, "plugin-interval": true, "plugin-timeout": true,
	"plugin-memory": true, "wasm-cache": true}

// reloader re-reads the configuration (the same command line, and the
// -config file as it is now) on SIGHUP.
type reloader struct {
	log   *slog.Logger
	cur   *flag.FlagSet // the running settings; writes into cfg
	cfg   *config
	h     *host
	parse func(out io.Writer) (*flag.FlagSet, *config, []string, error)
}

func (rl *reloader) reload() {
	next, ncfg, _, err := rl.parse(io.Discard)
	if err != nil {
		rl.log.Error("SIGHUP: configuration not reloaded; keeping the running one", "err", err)
		return
	}
	var applied, restart []string
	next.VisitAll(func(f *flag.Flag) {
		old := rl.cur.Lookup(f.Name)
		if old == nil || f.Name == "config" || old.Value.String() == f.Value.String() {
			return
		}
		if !reloadable[f.Name] {
			restart = append(restart, f.Name)
			rl.log.Warn("SIGHUP: setting changed; it needs a restart and is ignored until then",
				"setting", f.Name, "running", old.Value.String(), "file", f.Value.String())
			return
		}
		if pluginSettings[f.Name] || pushSettings[f.Name] {
			// Applied below, from the new configuration as a whole
			// (-plugin appends when Set).
			applied = append(applied, f.Name+"="+f.Value.String())
			return
		}
		// Setting through the running flag set updates rl.cfg.
		if err := rl.cur.Set(f.Name, f.Value.String()); err != nil {
			rl.log.Error("SIGHUP: setting not applied", "setting", f.Name, "err", err)
			return
		}
		applied = append(applied, f.Name+"="+f.Value.String())
	})
	// The mapping file is re-read even under an unchanged path: editing it
	// and sending SIGHUP is how statsd_exporter users reload theirs. parse
	// loaded it (a file that no longer parses refused the whole reload).
	if ncfg.mapping != "" || rl.cfg.mapping != ncfg.mapping {
		rl.cfg.mapper.Replace(ncfg.mapper)
		if rl.cfg.mapping == ncfg.mapping {
			applied = append(applied, "mapping="+ncfg.mapping+" (re-read)")
		}
	}
	restartPlugins, restartPush := false, false
	for _, a := range applied {
		switch name, _, _ := strings.Cut(a, "="); name {
		case "log-level":
			rl.cfg.levelVar.Set(ncfg.logLevel)
		case "interval":
			rl.h.setInterval(ncfg.interval)
		default:
			restartPlugins = restartPlugins || pluginSettings[name]
			restartPush = restartPush || pushSettings[name]
		}
	}
	if restartPush {
		rl.h.reloadPush(ncfg.push)
	}
	if restartPlugins {
		rl.reloadPlugins(ncfg)
	}
	rl.log.Info("SIGHUP: configuration reloaded", "applied", strings.Join(applied, " "),
		"needs_restart", strings.Join(restart, " "))
}

type pushRep struct {
	rep  reporters.Reporter
	name string
}

func (h *host) startPushReporter(ctx context.Context, rep reporters.Reporter, name string) {
	h.pushCtx = ctx
	h.pushReps = append(h.pushReps, pushRep{rep, name})
	h.push = append(h.push, reporters.Start(ctx, rep, h.cfg.interval,
		reporters.WithLogger(h.log), reporters.WithName(name)))
}

// setInterval restarts every push reporter on interval d. A scheduler
// reports once when it starts, so a reload reports at once.
func (h *host) setInterval(d time.Duration) {
	for i, s := range h.push {
		s.Stop()
		h.push[i] = reporters.Start(h.pushCtx, h.pushReps[i].rep, d,
			reporters.WithLogger(h.log), reporters.WithName(h.pushReps[i].name))
	}
}

// reloadPlugins stops every plugin (a call in flight gets its grace, then
// SIGKILL) and starts the new configuration's set. The new set was
// validated with the rest of the configuration before anything stopped.
func (rl *reloader) reloadPlugins(ncfg *config) {
	h := rl.h
	h.stopPlugins()
	h.closePlugins()
	rl.cfg.plugins = ncfg.plugins
	rl.cfg.pluginInterval, rl.cfg.pluginTimeout = ncfg.pluginInterval, ncfg.pluginTimeout
	rl.cfg.pluginMemory, rl.cfg.wasmCache = ncfg.pluginMemory, ncfg.wasmCache
	if err := h.startPlugins(context.Background()); err != nil {
		rl.log.Error("SIGHUP: plugins not restarted", "err", err)
		return
	}
	rl.log.Info("SIGHUP: plugins restarted", "plugins", len(rl.cfg.plugins))
}
