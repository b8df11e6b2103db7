#include "textflag.h"

// func commit(p unsafe.Pointer, w0, v uint64)
// The value is a plain store; w0 is a store-release (STLR), so a reader
// whose load of w0 observes it also observes the value.
TEXT ·commit(SB), NOSPLIT, $0-24
	MOVD p+0(FP), R0
	MOVD w0+8(FP), R1
	MOVD v+16(FP), R2
	MOVD R2, 8(R0)
	STLR R1, (R0)
	RET
