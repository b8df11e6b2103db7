package plugin

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tapes-go/tapes/hostabi"
	"github.com/tapes-go/tapes/hostabi/internal/interrupt"
)

// How a plugin's calls can be interrupted (Stats.Interrupt).
const (
	InterruptFuel   = "fuel"   // fuel checks added to the module (the default)
	InterruptWazero = "wazero" // wazero's WithCloseOnContextDone: the module could not be rewritten
	InterruptOff    = "off"    // Config.NoInterrupt
)

// ErrNotRewritable is wrapped by AddInterruptChecks's error for a module
// it does not decode (an opcode beyond WebAssembly 2.0). Such a module can
// still be stopped by compiling it with wazero's
// WithCloseOnContextDone(true), which New does for it; with the
// features New enables (those the rewriter models), wazero then
// refuses it.
var ErrNotRewritable = interrupt.ErrUnsupported

// AddInterruptChecks returns wasm with the fuel checks New adds to
// every plugin (docs/guest-abi.md, "Interrupting a guest"), for programs
// that run guests in a runtime of their own with hostabi.Instantiate: compile the
// result in a runtime with WithCloseOnContextDone(false), the features
// the rewrite models (WithCoreFeatures(api.CoreFeaturesV2)) and a "tapes"
// host module, and a call ends, with the *sys.ExitError wazero's own
// checks return, within 4096 fuel checks (loop iterations, calls) of
// its context ending, without wazero's exit to Go at every iteration. As
// after any failed call, close that instance rather than call it again. A
// malformed module, or one that would make wazero allocate without bound,
// gets an error; one it does not decode, an error wrapping
// ErrNotRewritable.
func AddInterruptChecks(wasm []byte) ([]byte, error) {
	return interrupt.Rewrite(wasm, interrupt.Import{Module: hostabi.ModuleName, Name: interrupt.CheckName}, interrupt.Fuel)
}

// rewriteCached is AddInterruptChecks, with the result kept in dir (when
// set) under the hash of its input: reading a rewrite back is several
// times cheaper than redoing it (docs/RATIONALE.md, "WebAssembly host:
// measurements behind the code").
// The file name carries the fuel and interrupt.Version, so a change to
// either never reads a stale rewrite; files are written whole and renamed
// into place, so concurrent starts never read a partial one.
func rewriteCached(wasm []byte, dir string) ([]byte, error) {
	if dir == "" {
		return AddInterruptChecks(wasm)
	}
	sum := sha256.Sum256(wasm)
	path := filepath.Join(dir, fmt.Sprintf("tapes-interrupt-v%d-%d-%x.wasm", interrupt.Version, interrupt.Fuel, sum))
	if b, err := os.ReadFile(path); err == nil {
		return b, nil
	}
	out, err := AddInterruptChecks(wasm)
	if err != nil {
		return nil, err
	}
	os.MkdirAll(dir, 0o700)
	if f, err := os.CreateTemp(dir, ".tapes-interrupt-*"); err == nil {
		_, werr := f.Write(out)
		if cerr := f.Close(); werr == nil && cerr == nil {
			os.Rename(f.Name(), path) // a failure only costs the next start a rewrite
		}
		os.Remove(f.Name())
	}
	return out, nil
}
