package interrupt

import (
	"context"
	"errors"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// The host side of the checks, shared by the host module (hostabi), which
// exports the check function, and the plugin runner (hostabi/plugin), which
// rewrites modules to call it.

// CheckName is the name of the check function in the host module (module
// "tapes"): () -> i32, the next fuel.
const CheckName = "interrupt_check"

// Fuel is how many units of fuel (loop iterations, calls of functions that
// call, 64-byte blocks of bulk memory) a guest spends between calls of the
// check function: the check (an exit to Go and a context lookup, ~100 ns)
// then costs ~0.03 ns per iteration, and a guest stuck in a loop reaches
// Go, where the scheduler and the garbage collector can stop it, within
// microseconds.
const Fuel = 4096

// Check is the check function: it ends the call if its context is done,
// and otherwise returns the next fuel. The panic unwinds the guest; wazero
// returns the *sys.ExitError unwrapped from the call, as its own checks do.
func Check(ctx context.Context, stack []uint64) {
	if err := ctx.Err(); err != nil {
		panic(ExitError(err))
	}
	stack[0] = api.EncodeI32(Fuel)
}

// ExitError is what a call ended by its context returns, as wazero's own
// checks report it.
func ExitError(err error) *sys.ExitError {
	if errors.Is(err, context.DeadlineExceeded) {
		return sys.NewExitError(sys.ExitCodeDeadlineExceeded)
	}
	return sys.NewExitError(sys.ExitCodeContextCanceled)
}
