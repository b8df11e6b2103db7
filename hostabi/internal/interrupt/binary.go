package interrupt

import "errors"

// decodeError ends a rewrite when the input is cut short or malformed; the
// reader panics with it and Rewrite turns it into the returned error.
type decodeError struct{ error }

var errTruncated = decodeError{errors.New("interrupt: module truncated or malformed")}

type reader struct {
	b []byte
	i int
}

func (r *reader) done() bool { return r.i >= len(r.b) }

func (r *reader) peek() byte {
	if r.i >= len(r.b) {
		panic(errTruncated)
	}
	return r.b[r.i]
}

func (r *reader) byte() byte {
	c := r.peek()
	r.i++
	return c
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || n > len(r.b)-r.i {
		panic(errTruncated)
	}
	b := r.b[r.i : r.i+n]
	r.i += n
	return b
}

func (r *reader) rest() []byte { return r.bytes(len(r.b) - r.i) }

// leb returns the bytes of one LEB128 number of at most max bytes.
func (r *reader) leb(max int) []byte {
	start := r.i
	for k := 0; ; k++ {
		if k == max {
			panic(errTruncated)
		}
		if r.byte()&0x80 == 0 {
			return r.b[start:r.i]
		}
	}
}

var errU32 = decodeError{errors.New("interrupt: a u32 LEB128 number is larger than 2^32-1")}

func (r *reader) u32() uint32 {
	var v uint32
	b := r.leb(5)
	if len(b) == 5 && b[4] > 0x0F {
		panic(errU32) // silently dropping the high bits could bring an index into range
	}
	for k, c := range b {
		v |= uint32(c&0x7F) << (7 * k)
	}
	return v
}

// s33 decodes a block type's type index (a signed 33-bit LEB128).
func s33(b []byte) int64 {
	var v int64
	shift := uint(0)
	for _, c := range b {
		v |= int64(c&0x7F) << shift
		shift += 7
	}
	if shift < 64 && b[len(b)-1]&0x40 != 0 {
		v |= -1 << shift
	}
	return v
}

// u32raw is u32 that also returns the bytes the number was written in.
func (r *reader) u32raw() (uint32, []byte) {
	start := r.i
	v := r.u32()
	return v, r.b[start:r.i]
}

func (r *reader) name() []byte { return r.bytes(int(r.u32())) }

func (r *reader) limits() {
	flags := r.byte()
	r.leb(10)
	if flags&1 != 0 {
		r.leb(10)
	}
}

type writer struct{ b []byte }

func (w *writer) byte(c byte)   { w.b = append(w.b, c) }
func (w *writer) raw(p []byte)  { w.b = append(w.b, p...) }
func (w *writer) name(p []byte) { w.u32(uint32(len(p))); w.b = append(w.b, p...) }

// keep copies a u32 that the rewrite does not change as it was written,
// not re-encoded: wazero refuses some immediates (memory.size's reserved
// zero) unless they take one byte, and writing 0x80 0x00 back as 0x00
// would turn a module wazero refuses into one it accepts.
func (w *writer) keep(r *reader) uint32 {
	v, b := r.u32raw()
	w.raw(b)
	return v
}

func (w *writer) u32(v uint32) {
	for v >= 0x80 {
		w.b = append(w.b, byte(v)|0x80)
		v >>= 7
	}
	w.b = append(w.b, byte(v))
}

func (w *writer) s32(v int32) {
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			w.b = append(w.b, c)
			return
		}
		w.b = append(w.b, c|0x80)
	}
}

func (w *writer) section(id byte, payload []byte) {
	w.byte(id)
	w.u32(uint32(len(payload)))
	w.raw(payload)
}
