package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// startPlugins starts one supervisor, and through it one process, per
// plugin (pluginsup.go).
func (h *host) startPlugins(ctx context.Context) error {
	if len(h.cfg.plugins) == 0 {
		return nil
	}
	// The running binary itself, even after an upgrade replaced the file:
	// a plugin process speaks this binary's protocol and shm layout.
	self := "/proc/self/exe"
	if _, err := os.Stat(self); err != nil {
		if self, err = os.Executable(); err != nil {
			return fmt.Errorf("plugins: %w", err)
		}
	}
	cache := h.cfg.wasmCache
	if cache == "" {
		if d, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(d, "tapes", "wasm")
		}
	}
	pctx, cancel := context.WithCancel(context.Background())
	h.plugins = nil
	h.stopPlg = cancel
	for _, spec := range h.cfg.plugins {
		path, err := filepath.Abs(spec.path)
		if err != nil {
			return fmt.Errorf("plugin %s: %w", spec.path, err)
		}
		seg := pluginSegment(spec.prefix)
		s := &pluginSup{
			spec:    pluginSpec{path: path, prefix: spec.prefix},
			seg:     seg,
			log:     h.log.With("plugin", spec.path),
			m:       newPluginMetrics(h.reg, seg),
			self:    self,
			shm:     h.shm.Path(),
			cache:   cache,
			pages:   h.cfg.pluginMemory,
			timeout: h.cfg.pluginTimeout,
			every:   h.cfg.pluginInterval,
			loaded:  make(chan struct{}),
		}
		h.plugins = append(h.plugins, s)
		h.pluginsWG.Add(1)
		go func() {
			defer h.pluginsWG.Done()
			s.run(pctx)
		}()
		fmt.Fprintf(h.out, "plugin: %s as %s.* (self-metrics %s.plugins.%s.*)\n", spec.path, spec.prefix, selfPrefix, seg)
	}
	return nil
}

// pluginSegment is the name segment of a plugin's self-metrics: its
// prefix with dots turned into underscores ("plugins.auth" ->
// "plugins_auth"). Config validation refuses two plugins with one segment.
func pluginSegment(prefix string) string { return strings.ReplaceAll(prefix, ".", "_") }

// stopPlugins stops calling plugins: a call in flight gets shutdownGrace
// to finish, then its process is killed. What the plugins committed stays
// in their rings for the final drain; idle processes stay up until
// closePlugins, so that their gauges reach the last report.
func (h *host) stopPlugins() {
	if h.stopPlg != nil {
		h.stopPlg()
	}
	h.pluginsWG.Wait()
}

// closePlugins ends the plugin processes stopPlugins left idle.
func (h *host) closePlugins() {
	for _, s := range h.plugins {
		s.close()
	}
}
