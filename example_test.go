package tapes_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/tapes-go/tapes"
	"github.com/tapes-go/tapes/registry"
)

func Example() {
	r := registry.New()
	r.Counter("my.jobs.queued").Inc()
	r.Timer("my.http.latency").Update(250 * time.Millisecond)
	s := r.Timer("my.http.latency").Snapshot()
	fmt.Println(r.Counter("my.jobs.queued").Value(), s.Count, s.Max, s.Quantiles[0])
	// Output: 1 1 0.25 0.25
}

func ExampleTimer() {
	t := registry.New().Timer("example.work") // tapes.Timer(name) on the default registry
	func() {
		defer t.Time().Stop()
		// ... the work being timed ...
	}()
	fmt.Println(t.Count())
	// Output: 1
}

func ExampleBind() {
	type UsersHandler struct {
		Latency *registry.Timer   `tapes:"http.{}.latency"`
		Errors  *registry.Counter `tapes:"http.{}.errors"`
	}
	r := registry.New()
	h := &UsersHandler{}
	if err := r.Bind(h); err != nil {
		panic(err)
	}
	h.Errors.Inc()
	r.Each(func(name string, m registry.Metric) { fmt.Println(name, m.Kind()) })
	// Output:
	// http.UsersHandler.errors counter
	// http.UsersHandler.latency timer
}

func ExampleRecorder() {
	record := func(rec tapes.Recorder) { rec.Counter("jobs.done").Add(3) }
	r := registry.New()
	record(tapes.On(r)) // the same function runs against the shm client or a guest
	b, _ := json.Marshal(r.Stats())
	fmt.Println(string(b))
	// Output: {"jobs":{"done":{"value":3}}}
}
