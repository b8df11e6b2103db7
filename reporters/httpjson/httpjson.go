// Package httpjson serves a registry's nested stats tree as JSON, the
// jsonify(get_stats()) endpoint of tapes done for the user:
//
//	http.Handle("/stats", httpjson.Handler(reg))
//
// The body is registry.Stats() encoded with encoding/json, e.g.
//
//	{"my":{"timer":{"count":2,"m1":0.4,...,"q99":0.012}}}
//
// A value JSON cannot express (a gauge function returning NaN or ±Inf) is
// written as null, so one bad gauge does not break the whole document.
package httpjson

import (
	"net/http"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/jsonstats"
	"github.com/tapes-go/tapes/reporters/internal/rendercache"
)

// ContentType is the Content-Type of the responses.
const ContentType = "application/json"

// Options configures NewHandler. The zero value is Handler's behaviour.
type Options struct {
	// MaxAge is how old a rendering may be when it answers a request; 0
	// means it began after the request arrived.
	MaxAge time.Duration
	// OnRender, if not nil, is called after every rendering with its
	// duration, size in bytes and error.
	OnRender func(took time.Duration, size int, err error)
}

// Handler returns an http.Handler serving r.Stats() as JSON; it is
// NewHandler(r, Options{}).
func Handler(r *registry.Registry) http.Handler { return NewHandler(r, Options{}) }

// NewHandler returns an http.Handler serving r.Stats() as JSON.
//
// Concurrent requests share one rendering: a request is answered by a
// render that began at most opts.MaxAge before it arrived, renders never
// overlap, and every request that arrives while one runs is answered by the
// next (or, within MaxAge, by the running one). So N clients cost one render
// per MaxAge (one at a time when MaxAge is 0), and memory holds one shared
// body and one stats tree, not one per request; a client accepting gzip
// gets it compressed, once per render.
func NewHandler(r *registry.Registry, opts Options) http.Handler {
	c := rendercache.New(func([]byte) ([]byte, error) {
		b, err := jsonstats.Marshal(r.Stats())
		return append(b, '\n'), err
	}, rendercache.Options{MaxAge: opts.MaxAge, OnRender: opts.OnRender})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, err := c.Get(req.Context())
		if err != nil {
			return // the client left while waiting
		}
		rendercache.Serve(w, req, b, ContentType, "encoding stats: ")
	})
}
