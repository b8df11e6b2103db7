package reporters_test

import (
	"context"
	"os"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters"
	"github.com/tapes-go/tapes/reporters/stream"
)

func ExampleStart() {
	r := registry.New()
	jobs := r.Counter("jobs.done")
	rep := &stream.Reporter{
		Registry: r,
		Writer:   os.Stdout,
		Now:      func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) },
	}
	s := reporters.Start(context.Background(), rep, time.Minute) // reports once now
	for s.Reports() == 0 {
		time.Sleep(time.Millisecond)
	}
	jobs.Add(3)
	s.StopAndFlush(context.Background()) // and once more at shutdown
	// Output:
	// {"timestamp":"2026-01-01T00:00:00Z","stats":{"jobs":{"done":{"value":0}}}}
	// {"timestamp":"2026-01-01T00:00:00Z","stats":{"jobs":{"done":{"value":3}}}}
}
