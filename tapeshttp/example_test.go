package tapeshttp_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/tapes-go/tapes"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/tapeshttp"
)

func ExampleMiddleware_Handler() {
	r := registry.New()
	m, err := tapeshttp.New(tapes.On(r), tapeshttp.Options{Errors: "http.{route}.errors"})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /users/{id}", m.MustHandler("users", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.PathValue("id") == "0" {
			http.Error(w, "no such user", http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, "user %s\n", req.PathValue("id"))
	})))
	mux.Handle("GET /fail", m.MustHandler("fail", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	})))
	for _, path := range []string{"/users/1", "/users/2", "/users/0", "/fail"} {
		mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	r.Each(func(name string, m registry.Metric) {
		switch x := m.(type) {
		case *registry.Counter:
			fmt.Println(name, x.Value())
		case *registry.Timer:
			fmt.Println(name, "count", x.Count())
		}
	})
	// Output:
	// http.fail.errors 1
	// http.fail.latency count 1
	// http.fail.status.5xx 1
	// http.users.errors 0
	// http.users.latency count 3
	// http.users.status.2xx 2
	// http.users.status.4xx 1
}

func ExampleWrap() {
	rec := httptest.NewRecorder()
	w, resp := tapeshttp.Wrap(rec)
	_, canFlush := w.(http.Flusher) // httptest.ResponseRecorder flushes
	_, canHijack := w.(http.Hijacker)
	fmt.Fprint(w, "hello")
	fmt.Println(resp.Status, resp.Bytes, canFlush, canHijack)
	// Output: 200 5 true false
}
