package interrupt

// module.go: what the rewrite learns about a module before it changes it
// (scan), what calling a host function costs, and the index checks that
// keep an invalid module from naming what the rewrite adds.

import (
	"errors"
	"fmt"
)

type module struct {
	imp                            Import
	has                            map[byte]bool
	types                          uint32
	importedFuncs, importedGlobals uint32
	definedFuncs, definedGlobals   uint32
	checkFunc, fuelGlobal          uint32
	hostFixed                      int32 // the fixed charge of a host call: fuel/8
	calls                          bool  // the body being rewritten has a call or call_indirect
	hostCosts                      map[uint32]hostCharge
}

// constantWASI are the WASI functions whose cost does not grow with their
// arguments or with time.
var constantWASI = map[string]bool{
	"clock_time_get": true, "clock_res_get": true, "sched_yield": true,
	"args_sizes_get": true, "environ_sizes_get": true, "fd_fdstat_get": true,
	"fd_prestat_get": true, "proc_exit": true,
}

// hostCharge is what a call of an imported function costs in fuel: a
// fixed amount (a share of the fuel between two checks), and for some,
// the length on top of the stack shifted right by shift.
type hostCharge struct {
	length bool
	shift  int32
}

// hostCost is the charge for calling the imported function mod.name. The
// host's own functions (check's module) cost nothing here: they are
// constant time or check the call's context themselves (hostabi's batch).
// Any other host function (WASI) may cost time by its arguments, which the
// fuel would not see: each call costs an eighth of the fuel between two
// checks, so a loop of them is checked every 8 calls, and random_get
// (whose length is its last parameter) also costs by its length. Only a
// direct call is charged, so such a function may not be referenced
// (ref.func, element segments), which a call_indirect would need.
//
// The WASI functions in constantWASI take constant time and are free: a
// Go guest reads the clock twice per timed event.
func hostCost(check Import, mod, name string) (hostCharge, bool) {
	if mod == check.Module || mod == "wasi_snapshot_preview1" && constantWASI[name] {
		return hostCharge{}, false
	}
	var c hostCharge
	if mod == "wasi_snapshot_preview1" && name == "random_get" {
		c.length, c.shift = true, 6
	}
	return c, true
}

// scan reads what the rewrite needs to know before it changes anything.
func (m *module) scan(s section) error {
	if m.has == nil {
		m.has = map[byte]bool{}
	}
	if s.id != secCustom {
		if m.has[s.id] {
			return fmt.Errorf("interrupt: section %d appears twice", s.id)
		}
		m.has[s.id] = true
	}
	r := &reader{b: s.payload}
	var n uint32
	switch s.id {
	case secType, secImport, secFunction, secTable, secMemory, secGlobal, secExport, secElement, secCode, secData, secTag:
		// Every entry of these vectors takes at least one byte. wazero
		// 1.12 allocates a vector's declared length before reading it, so
		// a 30-byte module declaring 2^32 imports would make it allocate
		// tens of GiB; such a module is refused here instead.
		n = r.u32()
		if uint64(n) > uint64(len(r.b)-r.i) {
			return fmt.Errorf("interrupt: section %d declares %d entries in %d bytes", s.id, n, len(r.b)-r.i)
		}
	}
	switch s.id {
	case secType:
		// Each type's parameter and result vectors too: wazero allocates
		// their declared lengths before reading them.
		m.types = n
		for ; n > 0; n-- {
			// wazero 1.12 also reads a rec group (0x4E) of several
			// types, whatever the enabled features: the type indices
			// would then differ from the ones counted here.
			if form := r.byte(); form != 0x60 {
				return fmt.Errorf("interrupt: type form %#x (only function types, 0x60, are modeled)", form)
			}
			for range 2 {
				k := r.u32()
				if uint64(k) > uint64(len(r.b)-r.i) {
					return fmt.Errorf("interrupt: a type declares %d values in %d bytes", k, len(r.b)-r.i)
				}
				for ; k > 0; k-- {
					valType(r, &writer{})
				}
			}
		}
	case secData:
		// And each data segment's bytes.
		for ; n > 0; n-- {
			switch flags := r.u32(); flags {
			case 0:
				m.constExpr(r, &writer{}) // the offset; globals and functions are counted by now
			case 1:
			case 2:
				r.u32()
				m.constExpr(r, &writer{})
			default:
				return fmt.Errorf("interrupt: data segment flags %d", flags)
			}
			r.bytes(int(r.u32()))
		}
	case secImport:
		for ; n > 0; n-- {
			mod, name := r.name(), r.name()
			switch kind := r.byte(); kind {
			case 0x00: // func
				m.typeIdx(r.u32())
				if c, ok := hostCost(m.imp, string(mod), string(name)); ok {
					if m.hostCosts == nil {
						m.hostCosts = map[uint32]hostCharge{}
					}
					m.hostCosts[m.importedFuncs] = c
				}
				m.importedFuncs++
			case 0x01: // table
				refType(r, &writer{})
				r.limits()
			case 0x02: // memory
				r.limits()
			case 0x03: // global
				globalType(r, &writer{})
				m.importedGlobals++
			default:
				// A tag (exception handling) or an unknown kind.
				return fmt.Errorf("interrupt: import kind %#x", kind)
			}
		}
	case secFunction:
		m.definedFuncs = n
		for ; n > 0; n-- {
			m.typeIdx(r.u32())
		}
	case secTable:
		// Only the WebAssembly 2.0 form: wazero 1.12 also reads a table
		// with an initializer expression (0x40 0x00), whose ref.func
		// would name a function by its index before the rewrite.
		for ; n > 0; n-- {
			refType(r, &writer{})
			r.limits()
		}
	case secMemory:
		for ; n > 0; n-- {
			r.limits()
		}
	case secGlobal:
		m.definedGlobals = n
	case secTag:
		return errors.New("interrupt: a tag section (exception handling is not modeled)")
	case secCustom:
		m.custom(r, &writer{}) // its checks, before any fallback
	case secCode:
		// Every body's locals, before anything is rewritten: a module that
		// falls back to wazero's checks must not reach wazero either.
		for ; n > 0; n-- {
			body := &reader{b: r.bytes(int(r.u32()))}
			total := uint64(0)
			for k := body.u32(); k > 0; k-- {
				if total += uint64(body.u32()); total > MaxLocals {
					return fmt.Errorf("interrupt: a function declares more than %d locals", MaxLocals)
				}
				valType(body, &writer{})
			}
		}
	}
	switch s.id {
	case secType, secImport, secFunction, secTable, secMemory, secData, secCode:
		// These were read to their end above. The rewrite copies the
		// entries of the first two as they are and appends its own, so
		// bytes after the last entry would be read as the start of the
		// next one: a type section declaring no types, with 63 bytes
		// behind it, became one whose type declares 3.9 billion
		// parameters, which wazero allocates (FuzzRewrite).
		if !r.done() {
			return fmt.Errorf("interrupt: section %d: bytes after its contents", s.id)
		}
	}
	return nil
}

// shift maps an old function index to its index after the check function
// is imported behind the module's own imports.
func (m *module) shift(f uint32) uint32 {
	if f >= m.importedFuncs {
		return f + 1
	}
	return f
}

// The rewrite adds a function, a global and a type at the first index past
// the module's own, so an out-of-range index in the input would name them
// after the rewrite: an invalid module (say, one that sets global 0 while
// declaring none) would become a valid one that refuels itself forever.
// Every index the rewrite copies is therefore checked against the module's
// own counts.

func (m *module) funcIdx(f uint32) uint32 {
	if uint64(f) >= uint64(m.importedFuncs)+uint64(m.definedFuncs) {
		m.fail(fmt.Errorf("interrupt: function index %d out of range", f))
	}
	return m.shift(f)
}

// refIdx is funcIdx for a reference to a function (ref.func, an element
// segment), which may not name a host function that is charged per call.
func (m *module) refIdx(f uint32) uint32 {
	if _, ok := m.hostCosts[f]; ok {
		m.fail(fmt.Errorf("interrupt: a reference to imported function %d, a host function charged per direct call", f))
	}
	return m.funcIdx(f)
}

func (m *module) globalIdx(g uint32) uint32 {
	if uint64(g) >= uint64(m.importedGlobals)+uint64(m.definedGlobals) {
		m.fail(fmt.Errorf("interrupt: global index %d out of range", g))
	}
	return g
}

func (m *module) typeIdx(t uint32) uint32 {
	if t >= m.types {
		m.fail(fmt.Errorf("interrupt: type index %d out of range", t))
	}
	return t
}

// fail ends the rewrite at the first problem: the loops that copy vectors
// trust their counts only as long as every element consumes input.
func (m *module) fail(err error) { panic(decodeError{err}) }
