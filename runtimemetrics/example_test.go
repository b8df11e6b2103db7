package runtimemetrics_test

import (
	"fmt"
	"runtime"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/runtimemetrics"
)

func ExampleRegister() {
	r := registry.New()
	set, err := runtimemetrics.Register(r, "myapp.runtime", runtimemetrics.Options{})
	if err != nil {
		panic(err)
	}
	defer set.Stop()

	goroutines, _ := r.Get("myapp.runtime.go.goroutines")
	fmt.Println("goroutines >= 1:", goroutines.(*registry.Gauge).Value() >= 1)
	gomaxprocs, _ := r.Get("myapp.runtime.go.gomaxprocs")
	fmt.Println("gomaxprocs matches:", gomaxprocs.(*registry.Gauge).Value() == float64(runtime.GOMAXPROCS(0)))
	cycles, _ := r.Get("myapp.runtime.go.gc.cycles")
	fmt.Println("gc.cycles is a", cycles.Kind())
	pauses, _ := r.Get("myapp.runtime.go.gc.pauses")
	fmt.Println("gc.pauses is a", pauses.Kind())
	// Output:
	// goroutines >= 1: true
	// gomaxprocs matches: true
	// gc.cycles is a counter
	// gc.pauses is a timer
}

func ExampleRegisterBuildInfo() {
	r := registry.New()
	if err := runtimemetrics.RegisterBuildInfo(r, "myapp.build"); err != nil {
		panic(err)
	}
	info, _ := r.Get("myapp.build.info")
	fmt.Println(info.(*registry.Gauge).Value())
	fmt.Println(runtimemetrics.EncodeVersion("v1.4.2"))
	// Output:
	// 1
	// 1.004002e+06
}
