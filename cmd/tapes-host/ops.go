package main

import (
	"time"

	"github.com/tapes-go/tapes/runtimemetrics"
)

// buildPrefix gives Prometheus tapes_build_info (and tapes_build_version,
// ...): see runtimemetrics.RegisterBuildInfo for the encoding.
const buildPrefix = "tapes.build"

// registerOps adds what an operator reads about the host itself: its
// build, its Go runtime and process (tapes.host.go.*, tapes.host.process.*)
// and its health (tapes.host.healthy, tapes.host.ready).
func (h *host) registerOps() error {
	if err := runtimemetrics.RegisterBuildInfo(h.reg, buildPrefix); err != nil {
		return err
	}
	set, err := runtimemetrics.Register(h.reg, selfPrefix, runtimemetrics.Options{Interval: 5 * time.Second})
	if err != nil {
		return err
	}
	h.runtime = set
	h.health.registerMetrics(h.reg)
	return nil
}

func versionString() string { return runtimemetrics.ReadBuild().Version }
