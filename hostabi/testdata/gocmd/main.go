//go:build wasip1

// Command gocmd is a Go command module (run once through _start) recording
// through tapesguest; a command must Flush before main returns.
// Build: GOOS=wasip1 GOARCH=wasm go build -o gocmd.wasm .
package main

import "github.com/tapes-go/tapes/guest/tapesguest"

func main() {
	tapesguest.Counter("runs").Inc()
	if err := tapesguest.Flush(); err != nil {
		panic(err)
	}
}
