// Binding a worker's definitions to the registry, and the applier
// entries its records go through (internal/apply).

package host

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/tapes-go/tapes/internal/apply"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/internal/layout"
	"github.com/tapes-go/tapes/wire"
)

// hdef is what the host bound one of a worker's definitions to, beyond
// the applier's entry: what unbinding the worker must undo.
type hdef struct {
	kind     wire.Kind
	rejected bool
	name     string
	g        *gaugeAgg // a gauge's cross-process aggregate
}

var batchPool = sync.Pool{New: func() any { return new(apply.Batch) }}

// slotGauge is the applier's gauge for one slot's definition: values go
// to the cross-process aggregate under the slot's number; NaN and ±Inf,
// which would poison a combined value, are counted instead.
type slotGauge struct {
	a    *gaugeAgg
	slot int
	bad  *int
}

func (g slotGauge) Set(f float64) {
	if f-f != 0 {
		*g.bad++
		return
	}
	g.a.set(g.slot, f)
}

// loadDefs reads the definitions slot i's worker published since the last
// call and binds each to a registry metric, or marks it rejected.
func (h *Host) loadDefs(i int, hs *hslot) {
	n := atomic.LoadUint64(h.slotU64(i, slotDefCount))
	if n == uint64(len(hs.defs)) {
		return
	}
	if n > uint64(h.g.MaxDefs) {
		if n != hs.badDefs {
			hs.badDefs = n
			h.self.malformed.Inc()
		}
		n = uint64(h.g.MaxDefs)
	}
	base := h.g.SlotOff(i) + h.g.DefOffset
	for id := len(hs.defs); id < int(n); id++ {
		e := h.m[base+id*layout.DefSize:][:layout.DefSize]
		d, m := h.bindDef(i, hs, e)
		ent := apply.Discard(d.kind)
		if d.rejected {
			h.self.rejected.Inc()
		} else if d.kind == wire.KindGauge {
			ent, _ = apply.NewEntry(d.kind, slotGauge{d.g, i, &hs.gaugeBad})
		} else {
			ent, _ = apply.NewEntry(d.kind, m)
		}
		hs.defs = append(hs.defs, d)
		hs.tab = append(hs.tab, ent)
	}
}

// bindDef binds one definition entry e of slot i to the registry: the
// metric its records go to (nil for a gauge, whose values go to d.g), or
// d.rejected.
func (h *Host) bindDef(i int, hs *hslot, e []byte) (d hdef, m registry.Metric) {
	k, mode, nl := wire.Kind(e[defKind]), shm.GaugeMode(e[defMode]), int(e[defNameLen])
	d = hdef{kind: k, rejected: true}
	if !k.Valid() || e[defZero] != 0 || nl == 0 || (k == wire.KindGauge) != mode.Valid() || (k != wire.KindGauge && mode != 0) {
		return d, nil
	}
	name := string(e[defName : defName+nl])
	d.name = name
	if wire.ValidateName(name) != nil || wire.Under(name, shm.ReservedPrefix) || wire.Under(name, h.prefix) {
		return d, nil // workers may not write into the host's own metrics
	}
	if k == wire.KindGauge {
		h.aggMu.Lock()
		defer h.aggMu.Unlock()
		a := h.aggs[name]
		if a == nil {
			a = &gaugeAgg{mode: mode, vals: map[int]gval{}}
			if mode != shm.GaugePerWorker {
				_, existed := h.reg.Get(name)
				g, err := h.reg.GaugeFunc(name, nil)
				if err != nil {
					return d, nil
				}
				a.g, a.owned = g, !existed
			}
			h.aggs[name] = a
		} else if a.mode != mode {
			return d, nil
		}
		if mode == shm.GaugePerWorker {
			g, err := h.reg.GaugeFunc(perWorkerName(name, hs.pid), nil)
			if err != nil {
				if a.refs == 0 {
					delete(h.aggs, name)
				}
				return d, nil
			}
			a.join(i, g)
		}
		a.refs++
		d.g, d.rejected = a, false
		if atomic.LoadUint32((*uint32)(unsafeAdd(&e[defGaugeSet], 0))) != 0 {
			f := math.Float64frombits(atomic.LoadUint64((*uint64)(unsafeAdd(&e[defGaugeVal], 0))))
			if f-f == 0 {
				a.set(i, f)
			}
		}
		return d, nil
	}
	m, err := h.reg.GetOrCreate(k, name)
	if err != nil {
		return d, nil
	}
	d.rejected = false
	return d, m
}
