// Package tests holds tapes' end-to-end and multi-process tests: the real
// tapes-host binary, worker processes in Go, C and Python killed with real
// signals, WebAssembly plugins built from source, and real Prometheus,
// StatsD and OpenTelemetry receivers. It has no code of its own.
package tests
