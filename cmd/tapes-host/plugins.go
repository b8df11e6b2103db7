package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tapes-go/tapes/hostabi"
)

// collectExport is the export a collector plugin provides; the host calls it
// every -plugin-interval.
const collectExport = hostabi.CollectExport

func (h *host) startPlugins(ctx context.Context) error {
	if len(h.cfg.plugins) == 0 {
		return nil
	}
	cache := h.cfg.wasmCache
	if cache == "" {
		if d, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(d, "tapes", "wasm")
		}
	}
	pctx, cancel := context.WithCancel(context.Background())
	h.stopPlg = cancel
	for _, spec := range h.cfg.plugins {
		wasm, err := os.ReadFile(spec.path)
		if err != nil {
			return fmt.Errorf("plugin %s: %w", spec.path, err)
		}
		p, err := hostabi.NewPlugin(ctx, hostabi.PluginConfig{
			Wasm:             wasm,
			Name:             spec.path,
			Prefix:           spec.prefix,
			Registry:         h.reg,
			CacheDir:         cache,
			MemoryLimitPages: uint32(h.cfg.pluginMemory),
			CallTimeout:      h.cfg.pluginTimeout,
			PoolSize:         h.cfg.pluginPool,
			Stdout:           os.Stderr,
			Stderr:           os.Stderr,
		})
		if err != nil {
			return fmt.Errorf("plugin %s: %w", spec.path, err)
		}
		lp := &plugin{spec: spec, p: p}
		h.plugins = append(h.plugins, lp)
		h.pluginsWG.Add(1)
		go func() {
			defer h.pluginsWG.Done()
			h.runPlugin(pctx, lp)
		}()
		fmt.Fprintf(h.out, "plugin: %s as %s.*\n", spec.path, spec.prefix)
	}
	return nil
}

// runPlugin drives one plugin: a collector is called on an interval until
// ctx ends; a command-style plugin runs its _start once.
func (h *host) runPlugin(ctx context.Context, lp *plugin) {
	log := h.log.With("plugin", lp.spec.path)
	if !lp.p.HasExport(collectExport) {
		if err := lp.p.RunStart(ctx); err != nil {
			h.pluginErrors.Inc()
			log.Error("plugin _start failed", "err", err)
		}
		return
	}
	t := time.NewTicker(h.cfg.pluginInterval)
	defer t.Stop()
	for {
		if err := lp.p.Collect(ctx); err != nil && ctx.Err() == nil {
			h.pluginErrors.Inc()
			log.Warn("plugin collect failed; its instance is replaced", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *host) stopPlugins() {
	if h.stopPlg != nil {
		h.stopPlg()
	}
	h.pluginsWG.Wait()
	for _, lp := range h.plugins {
		_ = lp.p.Close(context.Background())
	}
}
