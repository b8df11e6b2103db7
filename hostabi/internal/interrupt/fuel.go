package interrupt

// fuel.go: the instructions the rewrite emits to spend and refill fuel.

// bulkShift is, for each bulk memory and table instruction (sub-opcodes of
// 0xFC) whose cost grows with the length it is given, the shift that turns
// that length into fuel: one per 64 bytes, one per 4 table elements.
var bulkShift = map[uint32]int32{
	8: 6, 10: 6, 11: 6, // memory.init, memory.copy, memory.fill
	12: 2, 14: 2, 15: 2, 17: 2, // table.init, table.copy, table.grow, table.fill
}

// charge is the code added before a bulk instruction, whose length is on
// top of the stack (every one of them takes it last):
//
//	global.set $len
//	global.get $fuel; global.get $len; i32.const shift; i32.shr_u; i32.sub; global.set $fuel
//	global.get $fuel; i32.const 1; i32.lt_s
//	if; call $check; global.set $fuel; end
//	global.get $len
//
// So one memory.fill of 256 MiB is a check of its own, where it was one
// loop iteration's worth of fuel: the deadline is kept in time, not in
// instructions. $len is a global the rewrite adds, so no function's
// locals change; nothing runs between its set and its get but the check,
// a host function. The fuel may go below zero; the check refills it.
//
// fixed is added to the charge (for a host call, see hostCost).
func (m *module) charge(w *writer, shift, fixed int32) {
	g := m.fuelGlobal
	w.byte(0x24)
	w.u32(g + 1)
	w.byte(0x23)
	w.u32(g)
	w.byte(0x23)
	w.u32(g + 1)
	w.byte(0x41)
	w.s32(shift)
	w.raw([]byte{0x76, 0x6B})
	if fixed != 0 {
		w.byte(0x41)
		w.s32(fixed)
		w.byte(0x6B)
	}
	w.byte(0x24)
	w.u32(g)
	m.refill(w)
	w.byte(0x23)
	w.u32(g + 1)
}

// spend is the code added before a call of a host function with a fixed
// cost: global.get $fuel; i32.const cost; i32.sub; global.set $fuel, and
// the refill of charge.
func (m *module) spend(w *writer, cost int32) {
	w.byte(0x23)
	w.u32(m.fuelGlobal)
	w.byte(0x41)
	w.s32(cost)
	w.byte(0x6B)
	w.byte(0x24)
	w.u32(m.fuelGlobal)
	m.refill(w)
}

// refill calls the check if the fuel is below one:
// global.get $fuel; i32.const 1; i32.lt_s; if; call $check; global.set $fuel; end.
func (m *module) refill(w *writer) {
	w.byte(0x23)
	w.u32(m.fuelGlobal)
	w.raw([]byte{0x41, 0x01, 0x48, 0x04, 0x40, 0x10})
	w.u32(m.checkFunc)
	w.byte(0x24)
	w.u32(m.fuelGlobal)
	w.byte(0x0B)
}

// check is the code added after a loop header (in a dispatch loop, before
// each branch that may jump back and once before the loop's entry):
//
//	global.get $fuel; i32.const 1; i32.sub; global.set $fuel
//	global.get $fuel; i32.eqz
//	if; call $check; global.set $fuel; end
//
// wazero keeps the stored value in a register for the second global.get,
// so the common path is one load, one store and a branch. A global, not a
// local: the budget must span calls (a local refilled per call lets nested
// loops escape it), and a local handed over through the global around
// calls and exits was slower for a Go guest, whose wasm code passes every
// local through its dispatch loop (docs/RATIONALE.md, "WebAssembly host:
// measurements behind the code").
func (m *module) check(w *writer) {
	w.byte(0x23)
	w.u32(m.fuelGlobal)
	w.raw([]byte{0x41, 0x01, 0x6B, 0x24})
	w.u32(m.fuelGlobal)
	w.byte(0x23)
	w.u32(m.fuelGlobal)
	w.raw([]byte{0x45, 0x04, 0x40, 0x10})
	w.u32(m.checkFunc)
	w.byte(0x24)
	w.u32(m.fuelGlobal)
	w.byte(0x0B)
}
