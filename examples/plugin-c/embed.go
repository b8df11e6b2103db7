// Package pluginc embeds the example C plugin, built from src/plugin.c, so that
// tapes-host's demo can run it without a C toolchain. hostabi/plugin's tests
// rebuild src/plugin.c and check that this copy behaves the same.
package pluginc

import _ "embed"

// Wasm is plugin-c.wasm, built with:
//
//	clang --target=wasm32-wasi -O2 -mexec-model=reactor -I guest/c -o examples/plugin-c/src/plugin.c.wasm examples/plugin-c/plugin.c
//
//go:embed plugin-c.wasm
var Wasm []byte
