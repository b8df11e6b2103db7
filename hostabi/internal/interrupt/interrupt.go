// Package interrupt makes a WebAssembly guest stoppable: it rewrites a
// module so that a host can stop it cheaply (the host module of package
// hostabi exports the check function, Check; the plugin runner of package
// hostabi/plugin rewrites every module it runs). Every loop iteration
// counts down a fuel global the rewrite adds, and when the fuel runs out the guest calls an imported host function,
// which may end the call (by panicking with an error) or return the next
// fuel. The count sits after the loop header, or, in the jump-table loops
// that Go's compiler makes of every function, before each branch that may
// jump back (see dispatch).
//
// This replaces wazero's WithCloseOnContextDone, which compiles every loop
// header into an exit from native code to Go (~25 ns each; wazero issue
// #2466): here a loop iteration costs a load, a subtract, a store and a
// branch, and the guest leaves native code once per fuel's worth of
// iterations. Those periodic calls into Go are what keep a guest stuck in a
// loop from blocking the Go scheduler and the garbage collector, and they
// are where the host checks the call's context. See docs/guest-abi.md,
// "Interrupting a guest".
//
// Beyond loops, the entry of every function that calls another counts
// down the fuel too (a call tree needs no loop to run for hours: fib(90)),
// and a bulk memory or table instruction counts by its length (one
// memory.fill can cover 4 GiB). Between two calls of the host, a guest so
// runs a bounded amount of code, whatever its control flow.
//
// The rewriter reads a module as wazero 1.12 does, byte for byte, and
// refuses what it does not model (see CoreFeatures): a second parser that
// reads a different instruction stream than the one wazero compiles adds
// checks to code that never runs.
package interrupt

import (
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero/api"
)

// CoreFeatures is the feature set the rewriter models: WebAssembly 2.0
// (bulk memory, multi-value, mutable globals, non-trapping conversions,
// reference types, sign extension, SIMD). A runtime that runs rewritten
// modules must enable exactly these (wazero.RuntimeConfig's
// WithCoreFeatures): then an opcode the rewriter does not know
// (ErrUnsupported) is one wazero refuses as well. Encodings that wazero
// 1.12 reads whatever the features (typed references in value types, rec
// groups, tags, tables with an initializer) are refused by Rewrite itself.
const CoreFeatures = api.CoreFeaturesV2

// Import names the host function a rewritten module imports and calls
// when its fuel runs out: () -> i32, the fuel until the next call. The host
// module that provides it (hostabi's "tapes") owns the names.
type Import struct{ Module, Name string }

// Version changes whenever Rewrite's output or what it refuses changes, so
// that a cached rewrite (plugin.Config.CacheDir) from an older build is never
// used.
const Version = 6

// MaxLocals is the most locals a function may declare, V8's limit (so no
// module that runs in a browser is refused). wazero 1.12 accepts up to 2^32
// and allocates a slice of that length per function before compiling it: a
// few bytes of module would cost gigabytes and minutes.
const MaxLocals = 50000

// ErrUnsupported wraps the reason a module cannot be rewritten: an opcode
// of a proposal outside CoreFeatures (threads, tail calls, exceptions,
// typed references, GC). A caller may hand such a module to a runtime with
// wazero's own checks, and with CoreFeatures wazero refuses it too. Any
// other error means the module is malformed or uses an encoding the
// rewriter does not model; it must not run.
var ErrUnsupported = errors.New("interrupt: module uses a feature the rewriter does not decode")

// Section ids, in the binary format's numbering.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

// order is where each known section may appear (the spec's order: datacount
// sits between element and code, tag between memory and global).
var order = map[byte]int{
	secType: 1, secImport: 2, secFunction: 3, secTable: 4, secMemory: 5, secTag: 6,
	secGlobal: 7, secExport: 8, secStart: 9, secElement: 10, secDataCount: 11, secCode: 12, secData: 13,
}

type section struct {
	id      byte
	payload []byte
}

// Rewrite returns a copy of wasm with a fuel check in every loop and at
// the entry of every function that calls, calling check (imported after
// the module's own imports). fuel is the number of checks run between
// calls of it (its first value; afterwards check returns it): a check per
// loop iteration (in a dispatch loop per backward jump) and per call of a
// function that calls; a bulk instruction charges by its length.
func Rewrite(wasm []byte, check Import, fuel int32) (out []byte, err error) {
	if fuel <= 0 {
		return nil, fmt.Errorf("interrupt: fuel %d must be positive", fuel)
	}
	defer func() {
		// The reader (on input that ends early) and fail (on anything
		// else) panic with a decodeError, which ends the rewrite at once.
		if r := recover(); r != nil {
			if e, ok := r.(decodeError); ok {
				out, err = nil, e.error
				return
			}
			panic(r)
		}
	}()
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" || string(wasm[4:8]) != "\x01\x00\x00\x00" {
		return nil, errors.New("interrupt: not a WebAssembly 1.0 binary module")
	}
	var secs []section
	r := &reader{b: wasm[8:]}
	for !r.done() {
		id := r.byte()
		n := r.u32()
		secs = append(secs, section{id, r.bytes(int(n))})
	}

	m := &module{imp: check}
	for _, s := range secs {
		if _, ok := order[s.id]; !ok && s.id != secCustom {
			return nil, fmt.Errorf("interrupt: unknown section id %d", s.id)
		}
		if err := m.scan(s); err != nil {
			return nil, err
		}
	}
	m.checkFunc = m.importedFuncs
	m.fuelGlobal = m.importedGlobals + m.definedGlobals
	m.hostFixed = max(fuel/8, 1)

	w := &writer{b: append(make([]byte, 0, len(wasm)+len(wasm)/8), wasm[:8]...)}
	added := map[byte]bool{}
	addMissing := func(before int) {
		for _, id := range []byte{secType, secImport, secGlobal} {
			if !m.has[id] && !added[id] && order[id] < before {
				added[id] = true
				w.section(id, m.rewriteSection(section{id: id}, fuel))
			}
		}
	}
	// Sections the rewrite adds go no later than right after the module's
	// last known section, so that trailing custom sections stay last (a
	// decoder may treat the end of the module specially).
	lastKnown := -1
	for i, s := range secs {
		if s.id != secCustom {
			lastKnown = i
		}
	}
	if lastKnown < 0 {
		addMissing(1 << 30)
	}
	for i, s := range secs {
		if s.id != secCustom {
			addMissing(order[s.id])
		} else if dropCustom(s.payload) {
			continue
		}
		w.section(s.id, m.rewriteSection(s, fuel))
		if i == lastKnown {
			addMissing(1 << 30)
		}
	}
	return w.b, nil
}
