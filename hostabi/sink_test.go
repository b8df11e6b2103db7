package hostabi_test

import (
	"context"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/tapes-go/tapes/hostabi"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/wire"
)

// noMemoryWasm is a module without memory whose export f calls
// tapes.define(1, 0, 0) and returns its status.
var noMemoryWasm = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	// type: (i32 i32 i32) -> i32, () -> i32
	0x01, 0x0c, 0x02, 0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x01, 0x7f, 0x60, 0x00, 0x01, 0x7f,
	// import tapes.define, type 0
	0x02, 0x10, 0x01, 0x05, 't', 'a', 'p', 'e', 's', 0x06, 'd', 'e', 'f', 'i', 'n', 'e', 0x00, 0x00,
	// function 1: type 1
	0x03, 0x02, 0x01, 0x01,
	// export "f" = function 1
	0x07, 0x05, 0x01, 0x01, 'f', 0x00, 0x01,
	// code: i32.const 1, i32.const 0, i32.const 0, call 0, end
	0x0a, 0x0c, 0x01, 0x0a, 0x00, 0x41, 0x01, 0x41, 0x00, 0x41, 0x00, 0x10, 0x00, 0x0b,
}

// wazero's Memory() for a module without memory is a non-nil interface
// holding nil; the host functions must answer StatusMemory, not fault.
func TestNoMemoryModule(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	r := registry.New()
	if _, err := hostabi.Instantiate(ctx, rt, hostabi.RegistrySink(r), hostabi.Config{}); err != nil {
		t.Fatal(err)
	}
	mod, err := rt.Instantiate(ctx, noMemoryWasm)
	if err != nil {
		t.Fatal(err)
	}
	if s := wire.Status(call(t, mod, "f")); s != wire.StatusMemory {
		t.Errorf("define without memory = %v, want %v", s, wire.StatusMemory)
	}
}
