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

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/internal/jsonstats"
)

// ContentType is the Content-Type of the responses.
const ContentType = "application/json"

// Handler returns an http.Handler serving r.Stats() as JSON.
func Handler(r *registry.Registry) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, err := jsonstats.Marshal(r.Stats())
		if err != nil {
			http.Error(w, "encoding stats: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		w.Write(append(b, '\n'))
	})
}
