#include "textflag.h"

// func commit(p unsafe.Pointer, w0, v uint64)
// Two plain stores: x86-64 never reorders a store with an earlier store
// (TSO), so the value is visible to any reader that sees w0. A Go
// atomic.StoreUint64 would be an XCHG, a full barrier the commit does not need.
TEXT ·commit(SB), NOSPLIT, $0-24
	MOVQ p+0(FP), AX
	MOVQ w0+8(FP), BX
	MOVQ v+16(FP), CX
	MOVQ CX, 8(AX)
	MOVQ BX, 0(AX)
	RET
