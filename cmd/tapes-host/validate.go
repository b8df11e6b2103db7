package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/tapes-go/tapes/reporters/mapping"
	"github.com/tapes-go/tapes/reporters/prometheus"
	"github.com/tapes-go/tapes/shm"
	shmhost "github.com/tapes-go/tapes/shm/host"
	"github.com/tapes-go/tapes/wire"
)

// validateOps checks what validate did not: everything tapes-host would
// otherwise find out only after it created the shm file (a bad port, a
// missing directory, a namespace Prometheus cannot use), so that invalid
// configuration exits 2 having created nothing.
func (c *config) validateOps() error {
	if c.slots > shm.MaxSlots {
		return fmt.Errorf("-slots %d: at most %d", c.slots, shm.MaxSlots)
	}
	if c.ringRecords != 0 && (c.ringRecords < shm.MinRingRecords || c.ringRecords > shm.MaxRingRecords) {
		return fmt.Errorf("-ring %d: must be a power of two in %d..%d", c.ringRecords, shm.MinRingRecords, shm.MaxRingRecords)
	}
	if c.shmWindow < shmhost.MinCoalesceWindow || c.shmWindow > shmhost.MaxCoalesceWindow {
		return fmt.Errorf("-shm-window %v: must be from %v to %v", c.shmWindow, shmhost.MinCoalesceWindow, shmhost.MaxCoalesceWindow)
	}
	if c.shmPath != "" {
		if err := checkNewFilePath(c.shmPath); err != nil {
			return fmt.Errorf("-shm %s: %w", c.shmPath, err)
		}
	}
	if c.stream != "" && c.stream != "-" {
		if err := checkNewFilePath(c.stream); err != nil {
			return fmt.Errorf("-stream %s: %w", c.stream, err)
		}
	}
	if c.httpAddr != "" {
		if err := checkPort(c.httpAddr, true); err != nil {
			return fmt.Errorf("-http %q: %w", c.httpAddr, err)
		}
	}
	if c.statsdPrefix != "" {
		if err := wire.ValidateName(c.statsdPrefix); err != nil {
			return fmt.Errorf("-statsd-prefix %q: %w", c.statsdPrefix, err)
		}
	}
	c.mapper = &mapping.Mapper{}
	if c.mapping != "" {
		m, err := mapping.Load(c.mapping)
		if err != nil {
			return fmt.Errorf("-mapping: %w", err)
		}
		c.mapper = m
	}
	if c.namespace != "" {
		if _, err := prometheus.MetricName(c.namespace, "x"); err != nil {
			return fmt.Errorf("-namespace %q: %w", c.namespace, errors.Unwrap(err))
		}
	}
	for _, p := range c.plugins {
		if fi, err := os.Stat(p.path); err == nil && !fi.Mode().IsRegular() {
			return fmt.Errorf("-plugin %s: not a regular file", p.path)
		}
	}
	if c.wasmCache != "" {
		if fi, err := os.Stat(c.wasmCache); err == nil && !fi.IsDir() {
			return fmt.Errorf("-wasm-cache %s: not a directory", c.wasmCache)
		}
	}
	switch c.logFormat {
	case "text", "json":
	default:
		return fmt.Errorf("-log-format %q: want text or json", c.logFormat)
	}
	return nil
}

// checkPort requires a numeric port in range (0 only where listening: it
// picks a free port). The host part is left to the resolver.
func checkPort(addr string, listen bool) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Errorf("want host:port: %s", ae.Err) // ae.Error() repeats the address
		}
		return fmt.Errorf("want host:port: %w", err)
	}
	n, err := strconv.ParseUint(port, 10, 64)
	switch {
	case err != nil:
		return fmt.Errorf("port %q is not a number", port)
	case n > 65535:
		return fmt.Errorf("port %d is out of range (0..65535)", n)
	case n == 0 && !listen:
		return errors.New("port 0 is not a destination")
	}
	return nil
}

// checkNewFilePath accepts a path whose directory exists and which is not
// itself a directory: the file may or may not exist yet.
func checkNewFilePath(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return errors.New("is a directory")
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("directory %s: %w", dir, errors.Unwrap(err))
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}
