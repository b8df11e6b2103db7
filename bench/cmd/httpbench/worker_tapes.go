package main

import (
	"context"
	"io"
	"net/http"

	"github.com/tapes-go/tapes/shm"
)

func init() { workerVariants["tapes"] = tapesWorker }

// tapesWorker records each request's latency into this worker's ring of the
// shm file named by TAPES_SHM; tapes-host drains it. The worker's /count is
// what its ring dropped; the harness reads the totals from tapes-host.
func tapesWorker(context.Context, workerConfig) (middleware, func() (uint64, error), io.Closer, error) {
	c, err := shm.OpenEnv()
	if err != nil {
		return nil, nil, nil, err
	}
	return func(route string, h http.HandlerFunc) http.HandlerFunc {
		t, err := c.GetTimer("http." + route + ".latency")
		if err != nil {
			panic(err) // a constant, valid name
		}
		return func(w http.ResponseWriter, r *http.Request) {
			defer t.Time().Stop()
			h(w, r)
		}
	}, func() (uint64, error) { return c.Dropped(), nil }, c, nil
}
