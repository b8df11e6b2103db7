package interrupt

// sections.go: copying the sections other than code, with function indices
// shifted past the imported check and the fuel global and type added.

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

func (m *module) rewriteSection(s section, fuel int32) []byte {
	r := &reader{b: s.payload}
	w := &writer{}
	switch s.id {
	case secType:
		if !r.done() {
			r.u32() // m.types
		}
		w.u32(m.types + 1)
		w.raw(r.rest())
		w.raw([]byte{0x60, 0x00, 0x01, 0x7F}) // () -> i32
	case secImport:
		n := uint32(0)
		if !r.done() {
			n = r.u32()
		}
		w.u32(n + 1)
		w.raw(r.rest())
		w.name([]byte(m.imp.Module))
		w.name([]byte(m.imp.Name))
		w.byte(0x00)
		w.u32(m.types) // the type appended above
	case secGlobal:
		n := uint32(0)
		if !r.done() {
			n = r.u32()
		}
		w.u32(n + 2)
		for i := uint32(0); i < n; i++ {
			globalType(r, w)
			m.constExpr(r, w)
		}
		w.raw([]byte{0x7F, 0x01, 0x41}) // the fuel: mut i32, i32.const
		w.s32(fuel)
		w.byte(0x0B)
		w.raw([]byte{0x7F, 0x01, 0x41, 0x00, 0x0B}) // the scratch of charge: mut i32 0
	case secExport:
		for n := w.keep(r); n > 0; n-- {
			w.name(r.name())
			kind := r.byte()
			w.byte(kind)
			switch kind {
			case 0x00:
				w.u32(m.funcIdx(r.u32()))
			case 0x01, 0x02:
				w.keep(r)
			case 0x03:
				m.globalIdx(w.keep(r))
			default:
				// wazero 1.12 reads a tag export (4) whatever the
				// features; it is refused with the rest.
				m.fail(fmt.Errorf("interrupt: export kind %#x", kind))
			}
		}
	case secStart:
		w.u32(m.funcIdx(r.u32()))
	case secElement:
		m.elements(r, w)
	case secCode:
		for n := w.keep(r); n > 0; n-- {
			body := &reader{b: r.bytes(int(r.u32()))}
			bw := &writer{}
			for locals := bw.keep(body); locals > 0; locals-- { // bounded by scan
				bw.keep(body)
				valType(body, bw)
			}
			ew := &writer{}
			m.calls = false
			m.expr(body, ew)
			if !body.done() {
				m.fail(errors.New("interrupt: bytes after a function body's end"))
			}
			if m.calls {
				// A check at entry bounds recursion and call trees,
				// which need no loop to run forever. A function that
				// calls nothing runs a bounded stretch of code between
				// loop checks, so it goes without.
				m.check(bw)
			}
			bw.raw(ew.b)
			w.u32(uint32(len(bw.b)))
			w.raw(bw.b)
		}
	case secCustom:
		m.custom(r, w)
	default:
		w.raw(r.rest())
	}
	if !r.done() {
		m.fail(fmt.Errorf("interrupt: section %d: bytes after its contents", s.id))
	}
	return w.b
}

// elements copies the element section as wazero 1.12's
// decodeElementSegment reads it, shifting function indices.
func (m *module) elements(r *reader, w *writer) {
	n := w.keep(r)
	m.fits(r, n)
	for ; n > 0; n-- {
		flags := w.keep(r)
		if flags > 7 {
			m.fail(fmt.Errorf("interrupt: element segment flags %d", flags))
		}
		if flags&2 != 0 && flags&1 == 0 { // explicit table index
			w.keep(r)
		}
		if flags&1 == 0 { // active: offset expression
			m.constExpr(r, w)
		}
		if flags&3 != 0 {
			if flags&4 == 0 { // elemkind: funcref
				if k := r.byte(); k != 0x00 {
					m.fail(fmt.Errorf("interrupt: element kind %#x", k))
				}
				w.byte(0x00)
			} else {
				refType(r, w)
			}
		}
		count := w.keep(r)
		m.fits(r, count) // wazero allocates the vector before reading it
		for ; count > 0; count-- {
			if flags&4 == 0 {
				w.u32(m.refIdx(r.u32()))
			} else {
				m.constExpr(r, w)
			}
		}
	}
}

// fits refuses a vector of n entries, each at least a byte, that r has
// fewer bytes left for.
func (m *module) fits(r *reader, n uint32) {
	if uint64(n) > uint64(len(r.b)-r.i) {
		m.fail(fmt.Errorf("interrupt: a vector declares %d entries in %d bytes", n, len(r.b)-r.i))
	}
}

// valType copies a value type: only the one-byte WebAssembly 2.0 types.
// wazero 1.12 also reads (ref null? N) as 0x63 or 0x64 and a heap type
// of up to five bytes, whatever the enabled features; reading it as one
// byte, as this package once did, made the rest of a function body an
// instruction stream that wazero never runs (a loop went unchecked).
// Those types, and exnref (0x69), are refused.
func valType(r *reader, w *writer) {
	switch t := r.byte(); t {
	case 0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F:
		w.byte(t)
	default:
		panic(decodeError{fmt.Errorf("interrupt: value type %#x (only i32, i64, f32, f64, v128, funcref and externref are modeled)", t)})
	}
}

// refType copies a table's or element segment's reference type.
func refType(r *reader, w *writer) {
	switch t := r.byte(); t {
	case 0x70, 0x6F:
		w.byte(t)
	default:
		panic(decodeError{fmt.Errorf("interrupt: reference type %#x (only funcref and externref are modeled)", t)})
	}
}

// globalType copies a global's value type and mutability.
func globalType(r *reader, w *writer) {
	valType(r, w)
	if mut := r.byte(); mut > 1 {
		panic(decodeError{fmt.Errorf("interrupt: global mutability %#x", mut)})
	} else {
		w.byte(mut)
	}
}

// constExpr copies a constant expression (a global's initial value, a
// segment's offset or element) as wazero 1.12's decodeConstantExpression
// reads it with the features in CoreFeatures: instructions up to end,
// each one of these.
func (m *module) constExpr(r *reader, w *writer) {
	for {
		op := r.byte()
		w.byte(op)
		switch op {
		case 0x0B: // end
			return
		case 0x41:
			_, b := r.s32()
			w.raw(b)
		case 0x42:
			_, b := r.s64()
			w.raw(b)
		case 0x43:
			w.raw(r.bytes(4))
		case 0x44:
			w.raw(r.bytes(8))
		case 0x23: // global.get
			m.globalIdx(w.keep(r))
		case 0xD0: // ref.null
			refType(r, w)
		case 0xD2: // ref.func
			w.u32(m.refIdx(r.u32()))
		case 0xFD: // v128.const: its sub-opcode is one byte to wazero
			if sub := r.byte(); sub != 0x0C {
				m.fail(fmt.Errorf("interrupt: vector opcode %#x in a constant expression", sub))
			}
			w.byte(0x0C)
			w.raw(r.bytes(16))
		default:
			m.fail(fmt.Errorf("interrupt: opcode %#x in a constant expression", op))
		}
	}
}

// dropCustom reports whether a custom section describes code offsets that
// the rewrite changes (DWARF, source maps); such sections would mislead.
// Its name was checked by scan.
func dropCustom(payload []byte) bool {
	name := string((&reader{b: payload}).name())
	return len(name) > 7 && name[:7] == ".debug_" || name == "sourceMappingURL"
}

// custom copies a custom section, shifting the function indices of the
// "name" section's function, local and label name maps. scan runs it
// first, for its checks alone, so that they hold even for a module that
// falls back to wazero's checks:
//   - a section name that is not UTF-8 is refused, not dropped: dropping an
//     invalid ".debug_\xff" would turn a module wazero refuses into one it
//     accepts;
//   - the module, function and local names (subsections 0 to 2) must fill
//     their subsection exactly. wazero 1.12 makes each map and each name as
//     long as declared before reading it (a 396-byte module made it
//     allocate 6 GiB; FuzzRewrite), and reads these subsections past their
//     declared end if they say so, so trailing bytes would be read as more
//     subsections, counts and names. It skips the others by their size.
func (m *module) custom(r *reader, w *writer) {
	name := r.name()
	if !utf8.Valid(name) {
		m.fail(errors.New("interrupt: a custom section's name is not valid UTF-8"))
	}
	w.name(name)
	if string(name) != "name" {
		w.raw(r.rest())
		return
	}
	for !r.done() {
		id := r.byte()
		sub := &reader{b: r.bytes(int(r.u32()))}
		sw := &writer{}
		switch id {
		case 0: // module name
			sw.name(sub.name())
		case 1: // function names: vec(funcidx name)
			for n := sw.keep(sub); n > 0; n-- {
				sw.u32(m.shift(sub.u32()))
				sw.name(sub.name())
			}
		case 2, 3: // local and label names: vec(funcidx namemap)
			for n := sw.keep(sub); n > 0; n-- {
				sw.u32(m.shift(sub.u32()))
				for k := sw.keep(sub); k > 0; k-- {
					sw.keep(sub)
					sw.name(sub.name())
				}
			}
		}
		if id <= 2 && !sub.done() {
			m.fail(fmt.Errorf("interrupt: name subsection %d has bytes after its contents", id))
		}
		// Whatever follows another subsection's maps is copied as it is:
		// the rewrite must not repair a subsection that wazero refuses.
		sw.raw(sub.rest())
		w.byte(id)
		w.u32(uint32(len(sw.b)))
		w.raw(sw.b)
	}
}
