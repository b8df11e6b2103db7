package runtimemetrics

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// Build is what the binary knows about how it was built.
type Build struct {
	Path      string // main module path
	Version   string // main module version: a tag, a pseudo-version or "(devel)"
	GoVersion string // "go1.26.8"
	GOOS      string
	GOARCH    string
	Revision  string // VCS revision (empty when built without VCS information)
	Modified  bool   // the checkout had uncommitted changes
	Time      time.Time
}

// ReadBuild reads runtime/debug.ReadBuildInfo. A binary built without
// module support reads as Version "(unknown)".
func ReadBuild() Build {
	b := Build{Version: "(unknown)", GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	b.Path = bi.Main.Path
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		case "vcs.time":
			b.Time, _ = time.Parse(time.RFC3339, s.Value)
		}
	}
	return b
}

// RegisterBuildInfo registers the build of the running binary as gauges
// under prefix. tapes metrics carry no labels, so where client_golang's
// build_info gauge has a version label, the version here is spread over
// numeric gauges, one per part, each exact in a float64:
//
//	prefix.info             1: the series exists while the binary runs
//	                        (prefix "tapes.build" gives Prometheus tapes_build_info)
//	prefix.version          module version v<MAJOR>.<MINOR>.<PATCH> as MAJOR*1e6 + MINOR*1e3 + PATCH
//	                        (v1.4.2 -> 1004002; 0 for "(devel)" and for pseudo-versions' v0.0.0)
//	prefix.go_version       the same for the Go release (go1.26.8 -> 1026008)
//	prefix.revision         the first 12 hex digits of the VCS revision, as an integer
//	                        (printf '%012x' gives them back; 0 without VCS information)
//	prefix.modified         1 if built from a checkout with uncommitted changes
//	prefix.vcs_time_seconds the revision's commit time, Unix seconds (0 if unknown)
//
// Once tapes has labels, a single labelled info gauge can replace these.
func RegisterBuildInfo(r *registry.Registry, prefix string) error {
	if err := wire.ValidateName(prefix); err != nil {
		return fmt.Errorf("runtimemetrics: prefix: %w", err)
	}
	b := ReadBuild()
	var rev, vcsTime float64
	if len(b.Revision) >= 12 {
		if n, err := strconv.ParseUint(b.Revision[:12], 16, 64); err == nil {
			rev = float64(n)
		}
	}
	if !b.Time.IsZero() {
		vcsTime = float64(b.Time.Unix())
	}
	modified := 0.0
	if b.Modified {
		modified = 1
	}
	vals := []struct {
		name string
		v    float64
	}{
		{"info", 1},
		{"version", EncodeVersion(b.Version)},
		{"go_version", EncodeVersion(strings.TrimPrefix(b.GoVersion, "go"))},
		{"revision", rev},
		{"modified", modified},
		{"vcs_time_seconds", vcsTime},
	}
	for _, x := range vals {
		if err := free(r, registry.KindGauge, prefix+"."+x.name); err != nil {
			return err
		}
	}
	for _, x := range vals {
		g, err := r.GaugeFunc(prefix+"."+x.name, nil)
		if err != nil {
			return fmt.Errorf("runtimemetrics: %w", err)
		}
		g.Set(x.v)
	}
	return nil
}

// EncodeVersion turns "v1.4.2", "1.4.2", "1.26" or "v1.4.2-rc.1+meta" into
// MAJOR*1e6 + MINOR*1e3 + PATCH; anything else ("(devel)", a part over 999)
// gives 0.
func EncodeVersion(v string) float64 {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+ "); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return 0
	}
	var n float64
	for i, scale := range []float64{1e6, 1e3, 1} {
		if i >= len(parts) {
			break
		}
		x, err := strconv.ParseUint(parts[i], 10, 32)
		if err != nil || x > 999 {
			return 0
		}
		n += float64(x) * scale
	}
	return n
}
