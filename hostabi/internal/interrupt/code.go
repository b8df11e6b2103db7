package interrupt

// code.go: copying function bodies instruction by instruction, and finding
// where the fuel checks go (loop headers, and the backward jumps of the
// dispatch loops Go's compiler makes).

import (
	"fmt"
)

// expr copies a function body's instructions up to and including the end
// that closes it, shifting function indices and adding the fuel checks:
// after every loop header, except in dispatch loops (see dispatchAt),
// where they go before the branches that may jump back; and a charge
// before every bulk memory or table instruction (see charge).
func (m *module) expr(r *reader, w *writer) {
	var open []ctl
	var prev, prev2 instr // the two instructions before this one
	segBlocks, segOf := 0, (*dispatch)(nil)
	for {
		op := r.byte()
		cur := instr{op: op}
		var loopSegs int       // a dispatch loop's segment blocks
		var loopDisp *dispatch // set when op starts a dispatch loop
		switch {
		case op == 0x0C || op == 0x0D: // br, br_if
			l, raw := r.u32raw()
			if backBranch(open, l, op, prev, prev2) {
				m.check(w)
			}
			w.byte(op)
			w.raw(raw)
		case op == 0x0E: // br_table
			start := r.i
			n := r.u32()
			m.fits(r, n)
			back := false
			for ; n > 0; n-- {
				back = backBranch(open, r.u32(), op, prev, prev2) || back
			}
			back = backBranch(open, r.u32(), op, prev, prev2) || back // the default
			if back {
				m.check(w)
			}
			w.byte(op)
			w.raw(r.b[start:r.i])
		case op == 0x03: // loop
			ahead := *r // past the block type: is it a dispatch loop?
			m.blockType(&ahead, &writer{})
			loopSegs, loopDisp = dispatchAt(ahead)
			w.byte(op)
			m.instr(r, w, op, &cur)
		case op == 0xFC:
			ahead := *r
			if shift, ok := bulkShift[ahead.u32()]; ok {
				m.charge(w, shift, 0)
			}
			w.byte(op)
			m.instr(r, w, op, &cur)
		case op == 0x10:
			ahead := *r
			if c, ok := m.hostCosts[ahead.u32()]; ok {
				if c.length {
					m.charge(w, c.shift, m.hostFixed)
				} else {
					m.spend(w, m.hostFixed)
				}
			}
			w.byte(op)
			m.instr(r, w, op, &cur)
		default:
			w.byte(op)
			m.instr(r, w, op, &cur)
		}
		switch op {
		case 0x02, 0x04: // block, if
			c := ctl{}
			if op == 0x02 && segBlocks > 0 {
				c.closes, segBlocks = segOf, segBlocks-1
			}
			open = append(open, c)
		case 0x03: // loop
			c := ctl{loop: true}
			if loopDisp != nil {
				// No check at its header, and none before it: every
				// entry of the loop either repeats because an enclosing
				// loop or the function repeats, which are checked.
				c.dispatch, segBlocks, segOf = loopDisp, loopSegs, loopDisp
			} else {
				m.check(w)
			}
			open = append(open, c)
		case 0x0B: // end
			if len(open) == 0 {
				return
			}
			if c := open[len(open)-1]; c.closes != nil {
				c.closes.closed++
			}
			open = open[:len(open)-1]
		}
		prev2, prev = prev, cur
	}
}

// ctl is a block, loop or if that expr has read the start of but not the
// end.
type ctl struct {
	loop     bool
	dispatch *dispatch // a dispatch loop
	closes   *dispatch // one of a dispatch loop's segment blocks
}

// instr is what backBranch needs to know of an instruction: its opcode and
// the immediate of an i32.const or local.set.
type instr struct {
	op  byte
	imm int64
}

// dispatch is a loop laid out the way compilers of unstructured control
// flow lay out a function (Go's wasm backend does it for every function):
//
//	loop
//	  block block ... block     ;; n blocks
//	    local.get $pc
//	    br_table t0 t1 ...      ;; $pc = k: to the end of the tk-th innermost block
//	  end  ;; segment 0 follows
//	  ...
//	  end  ;; segment n-1 follows
//	end
//
// Code jumps with "i32.const k; local.set $pc; br <loop>" to segment tk.
// Only a jump to a segment at or before the current one can repeat code;
// one to a later segment cannot, because segments run in order and each
// is straight-line code (its own loops have their own checks). So these
// loops get no check at their header, which every jump passes, forward or
// not (in Go code every iteration of a source loop passed it twice), but
// one before every branch to the loop that is not such a forward jump.
type dispatch struct {
	pc     uint32  // the local holding the jump table index
	seg    []int64 // br_table's targets: the segment for each index, or -1 (not a segment block)
	closed int64   // segment blocks closed so far: the code read is in segment closed-1
}

// dispatchAt reports whether the loop whose body starts at r is a dispatch
// loop, and if so how many segment blocks it opens. It reads a copy of r;
// what it reads, expr reads next, so a truncated or malformed body fails
// there the same way.
func dispatchAt(r reader) (int, *dispatch) {
	n := 0
	for r.i+1 < len(r.b) && r.b[r.i] == 0x02 && r.b[r.i+1] == 0x40 { // block with no type
		r.i += 2
		n++
	}
	if n == 0 || r.i >= len(r.b) || r.b[r.i] != 0x20 { // local.get
		return 0, nil
	}
	r.i++
	d := &dispatch{pc: r.u32()}
	if r.i >= len(r.b) || r.b[r.i] != 0x0E { // br_table
		return 0, nil
	}
	r.i++
	for cnt := r.u32(); cnt > 0; cnt-- {
		t := int64(r.u32())
		if t >= int64(n) {
			t = -1 // the loop itself or a label outside it
		}
		d.seg = append(d.seg, t)
	}
	return n, d
}

// backBranch reports whether a branch (op) to label l may jump back to a
// loop header and so needs a fuel check before it: its target is a loop,
// and it is not a dispatch loop's forward jump (see dispatch), which is an
// unconditional br right after "i32.const k; local.set $pc" where k's
// segment comes after the current one. A label past the open blocks is
// invalid, and wazero refuses the module anyway.
func backBranch(open []ctl, l uint32, op byte, prev, prev2 instr) bool {
	if int64(l) >= int64(len(open)) {
		return false // the function's own block (a return), or invalid
	}
	c := open[len(open)-1-int(l)]
	if !c.loop {
		return false
	}
	d := c.dispatch
	if d == nil {
		return false // checked at its header
	}
	if op == 0x0C && prev.op == 0x21 && prev.imm == int64(d.pc) &&
		prev2.op == 0x41 && prev2.imm >= 0 && prev2.imm < int64(len(d.seg)) && d.seg[prev2.imm] >= d.closed {
		return false
	}
	return true
}

// instr copies the immediates of op, which it has written, recording in cur
// what backBranch needs. It reads them as wazero 1.12's validator
// (internal/wasm/func_validation.go) reads them with the features in
// CoreFeatures, byte for byte, and refuses any other encoding: where the
// two disagreed on an instruction's length, the rest of the body was two
// different instruction streams, and the one wazero ran had no checks.
// Opcodes of proposals outside CoreFeatures are ErrUnsupported: wazero
// refuses them too, with those features.
func (m *module) instr(r *reader, w *writer, op byte, cur *instr) {
	switch {
	case op == 0x02 || op == 0x03 || op == 0x04: // block, loop, if
		m.blockType(r, w)
	case op == 0x00 || op == 0x01 || op == 0x05 || op == 0x0B || op == 0x0F || op == 0x1A || op == 0x1B ||
		op >= 0x45 && op <= 0xC4 || op == 0xD1:
		// no immediates
	case op == 0x23 || op == 0x24: // global.get, global.set
		m.globalIdx(w.keep(r))
	case op == 0x21: // local.set
		cur.imm = int64(w.keep(r))
	case op == 0x20 || op == 0x22 || op == 0x25 || op == 0x26: // local.get, local.tee, table.get, table.set
		w.keep(r)
	case op == 0x10: // call
		w.u32(m.funcIdx(r.u32()))
		m.calls = true
	case op == 0xD2: // ref.func
		w.u32(m.refIdx(r.u32()))
	case op == 0x11: // call_indirect: type, table
		m.typeIdx(w.keep(r))
		w.keep(r)
		m.calls = true
	case op == 0x1C: // select t*: wazero reads the count as one byte, and only 1
		if n := r.byte(); n != 1 {
			m.fail(fmt.Errorf("interrupt: select with %#x types", n))
		}
		w.byte(1)
		valType(r, w)
	case op >= 0x28 && op <= 0x3E:
		m.memarg(r, w)
	case op == 0x3F || op == 0x40: // memory.size, memory.grow
		m.reserved(r, w)
	case op == 0x41:
		v, b := r.s32()
		cur.imm = int64(v)
		w.raw(b)
	case op == 0x42:
		_, b := r.s64()
		w.raw(b)
	case op == 0x43:
		w.raw(r.bytes(4))
	case op == 0x44:
		w.raw(r.bytes(8))
	case op == 0xD0: // ref.null
		refType(r, w)
	case op == 0xFC:
		sub := w.keep(r)
		switch {
		case sub <= 7: // saturating truncations
		case sub == 8: // memory.init: data index, memory
			w.keep(r)
			m.reserved(r, w)
		case sub == 9 || sub == 13: // data.drop, elem.drop
			w.keep(r)
		case sub == 10: // memory.copy: two memories
			m.reserved(r, w)
			m.reserved(r, w)
		case sub == 11: // memory.fill
			m.reserved(r, w)
		case sub == 12 || sub == 14: // table.init: element, table; table.copy: two tables
			w.keep(r)
			w.keep(r)
		case sub <= 17: // table.grow, table.size, table.fill
			w.keep(r)
		default:
			m.fail(fmt.Errorf("%w: opcode 0xFC %d", ErrUnsupported, sub))
		}
	case op == 0xFD:
		// wazero 1.12 reads a vector sub-opcode as one byte, not as the
		// LEB128 number the specification has: 0xFD 0x80 0x01 is
		// i16x8.abs followed by a nop to it, and so here.
		sub := r.byte()
		w.byte(sub)
		switch {
		case sub <= 0x0B || sub == 0x5C || sub == 0x5D: // loads, store
			m.memarg(r, w)
		case sub == 0x0C || sub == 0x0D: // v128.const, i8x16.shuffle
			w.raw(r.bytes(16))
		case sub >= 0x15 && sub <= 0x22: // extract and replace lane
			w.byte(r.byte())
		case sub >= 0x54 && sub <= 0x5B: // load and store lane
			m.memarg(r, w)
			w.byte(r.byte())
		}
	default:
		m.fail(fmt.Errorf("%w: opcode %#x", ErrUnsupported, op))
	}
}

// reserved copies a memory index that must be zero, and one byte.
func (m *module) reserved(r *reader, w *writer) {
	if c := r.byte(); c != 0 {
		m.fail(fmt.Errorf("interrupt: reserved byte %#x (multiple memories are not modeled)", c))
	}
	w.byte(0)
}

// blockType copies a block type as wazero's DecodeBlockType reads it (a
// signed 33-bit number, however many bytes it takes): empty, one of the
// one-byte value types, or a type index.
func (m *module) blockType(r *reader, w *writer) {
	t, b := r.s33()
	switch t {
	case -64, -1, -2, -3, -4, -5, -16, -17: // 0x40 (empty), i32 ... v128, funcref, externref
	default:
		if t < 0 || t >= int64(m.types) {
			m.fail(fmt.Errorf("interrupt: block type %d (a reference type or out of range)", t))
		}
	}
	w.raw(b)
}

// memarg copies a memory argument: alignment (below 32) and offset, two
// u32s to wazero.
func (m *module) memarg(r *reader, w *writer) {
	if a := w.keep(r); a >= 32 {
		m.fail(fmt.Errorf("interrupt: memory alignment 2^%d", a))
	}
	w.keep(r)
}
