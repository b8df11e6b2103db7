package interrupt

import (
	"errors"
	"fmt"
)

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

var errLEB = decodeError{errors.New("interrupt: a signed LEB128 number is malformed or too long")}

// The signed readers below accept exactly the encodings wazero 1.12's
// leb128 package accepts (internal/leb128: decodeInt32, decodeInt64,
// DecodeInt33AsInt64), with the value it reads, and refuse the rest; they
// return the bytes the number was written in.

// s32 reads a signed 32-bit LEB128 number (i32.const).
func (r *reader) s32() (int32, []byte) {
	v, b := r.signed(5, 32, 0x30)
	return int32(v), b
}

// s64 reads a signed 64-bit LEB128 number (i64.const).
func (r *reader) s64() (int64, []byte) { return r.signed(10, 64, 0x3E) }

// signed reads at most max bytes; at max bytes the bits of the last byte
// that lie past the number's width (unused) must repeat its sign.
func (r *reader) signed(max, width int, unused byte) (int64, []byte) {
	start := r.i
	var v int64
	shift := 0
	var c byte
	for n := 1; ; n++ {
		if n > max {
			panic(errLEB) // wazero reads on to the last byte, then refuses it too
		}
		c = r.byte()
		if shift < 64 {
			v |= int64(c&0x7F) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			if n == max {
				if neg := v<<(64-width)>>(64-width) < 0; neg && c&unused != unused || !neg && c&unused != 0 {
					panic(errLEB)
				}
			}
			break
		}
	}
	if shift < width && c&0x40 != 0 {
		v |= -1 << shift
	}
	if width == 32 {
		v = int64(int32(v))
	}
	return v, r.b[start:r.i]
}

// s33 reads a block type or heap type: a signed 33-bit LEB128 number, as
// wazero's DecodeInt33AsInt64 reads it. That function stops after five
// bytes even when the fifth says another follows, and then reads the rest
// as the next instruction; such a number is refused here.
func (r *reader) s33() (int64, []byte) {
	start := r.i
	var v int64
	shift := 0
	var c byte
	for shift < 35 {
		c = r.byte()
		v |= int64(c&0x7F) << shift
		shift += 7
		if c&0x80 == 0 {
			break
		}
	}
	if c&0x80 != 0 {
		panic(errLEB)
	}
	if shift < 33 && c&0x40 != 0 {
		v |= (1<<33 - 1) << shift
	}
	v &= 1<<33 - 1
	if v&(1<<32) != 0 {
		v -= 1 << 33
	}
	if r.i-start == 5 {
		if unused := c & 0x20; v < 0 && unused == 0 || v >= 0 && unused != 0 {
			panic(errLEB)
		}
	}
	return v, r.b[start:r.i]
}

// u32raw is u32 that also returns the bytes the number was written in.
func (r *reader) u32raw() (uint32, []byte) {
	start := r.i
	v := r.u32()
	return v, r.b[start:r.i]
}

func (r *reader) name() []byte { return r.bytes(int(r.u32())) }

// limits reads a table's or memory's limits as wazero's decodeLimitsType
// does; the shared forms (flags 2 and 3, from the threads proposal) are
// refused.
func (r *reader) limits() {
	flags := r.byte()
	if flags > 1 {
		panic(decodeError{fmt.Errorf("interrupt: limits flags %#x (shared or unknown)", flags)})
	}
	r.u32()
	if flags == 1 {
		r.u32()
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
