// A worker's definitions: names checked under the name rule before
// anything is written, published in the slot's table.

package shm

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/tapes-go/tapes/wire"
)

// ReservedPrefix is the namespace of the host's own metrics: a worker may
// not define a name equal to it or under it ("tapes.host.shm.dropped" would
// otherwise add into the host's counter). The host refuses and counts such
// definitions too (<prefix>.rejected), whichever client wrote them.
const ReservedPrefix = "tapes"

// ErrReservedName: a worker defined a name under ReservedPrefix.
var ErrReservedName = errors.New("shm: names under \"tapes.\" are reserved for the host's own metrics")

func reservedName(name string) bool {
	return wire.Under(name, ReservedPrefix)
}

// ErrModeConflict: a gauge is defined again with another combine mode.
var ErrModeConflict = errors.New("shm: gauge already defined with another mode")

// Define publishes a metric definition in this worker's table and returns
// its id, the index records carry. It is the error-returning form behind
// every handle method; errors are *wire.NameError values (the registry's)
// (invalid name, kind conflict, prefix conflict, too many metrics: the
// table holds the host's Config.MaxMetrics names per worker), ErrModeConflict or
// ErrClosed. Defining a name again returns the same id.
func (c *Client) Define(k wire.Kind, name string) (uint32, error) {
	return c.define(k, name, 0)
}

func (c *Client) define(k wire.Kind, name string, mode GaugeMode) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.defineLocked(k, name, mode)
}

func (c *Client) defineLocked(k wire.Kind, name string, mode GaugeMode) (uint32, error) {
	if c.closed.Load() {
		return 0, ErrClosed
	}
	if k == wire.KindGauge && mode == 0 {
		mode = c.modes[name]
		if mode == 0 {
			mode = DefaultGaugeMode
		}
	}
	if d, ok := c.defs[name]; ok {
		if d.kind != k {
			return 0, &wire.NameError{Name: name, Kind: k, Existing: d.kind, Err: wire.ErrKindConflict}
		}
		if k == wire.KindGauge && d.mode != mode {
			return 0, fmt.Errorf("%w: %q is %v, asked for %v", ErrModeConflict, name, d.mode, mode)
		}
		return d.id, nil
	}
	if k == wire.KindGauge && !mode.Valid() {
		return 0, fmt.Errorf("shm: gauge %q: invalid mode %d", name, mode)
	}
	if reservedName(name) {
		return 0, fmt.Errorf("%w: %q", ErrReservedName, name)
	}
	// The same table the host's registry keeps: a worker is refused exactly
	// what the host would refuse, before anything is written.
	if _, err := c.names.Add(k, name); err != nil {
		return 0, err
	}
	id := uint32(len(c.defs))
	e := c.m[c.base+c.g.DefOffset+int(id)*DefSize:][:DefSize]
	clear(e)
	e[defKind] = byte(k)
	if k == wire.KindGauge {
		e[defMode] = byte(mode)
	}
	e[defNameLen] = byte(len(name))
	copy(e[defName:], name)
	// Publishing the count is the release: the host reads entries only
	// below the count it loaded. The doorbell makes the host read them
	// now, so that the metric appears in its registry before any event.
	atomic.StoreUint64(c.defCount, uint64(id)+1)
	c.ringBell()
	c.defs[name] = def{id: id, kind: k, mode: mode}
	return id, nil
}

// GaugeMode declares the combine mode of the gauge called name before it is
// defined, so that library code calling Gauge(name, fn) through a
// tapes.Recorder gets it. Declaring another mode for an already defined
// gauge returns ErrModeConflict.
func (c *Client) GaugeMode(name string, mode GaugeMode) error {
	if !mode.Valid() {
		return fmt.Errorf("shm: gauge %q: invalid mode %d", name, mode)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.defs[name]; ok && d.kind == wire.KindGauge && d.mode != mode {
		return fmt.Errorf("%w: %q is %v, asked for %v", ErrModeConflict, name, d.mode, mode)
	}
	c.modes[name] = mode
	return nil
}
