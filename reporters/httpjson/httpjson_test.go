package httpjson

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
)

func TestServesStatsTree(t *testing.T) {
	r := registry.New()
	r.Counter("jobs.done").Add(4)
	r.Gauge("jobs.queue", nil).Set(2.5)
	r.Gauge("broken", func() float64 { return math.NaN() })
	r.Timer("http.latency").Update(20 * time.Millisecond)

	srv := httptest.NewServer(Handler(r))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got struct {
		Jobs struct {
			Done  struct{ Value int64 }
			Queue struct{ Value float64 }
		}
		Broken struct{ Value *float64 }
		HTTP   struct {
			Latency struct {
				Count int64
				Max   float64
			}
		} `json:"http"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Jobs.Done.Value != 4 || got.Jobs.Queue.Value != 2.5 || got.Broken.Value != nil {
		t.Fatalf("decoded %+v", got)
	}
	if got.HTTP.Latency.Count != 1 || math.Abs(got.HTTP.Latency.Max-0.02)/0.02 > 0.03 {
		t.Fatalf("timer decoded as %+v", got.HTTP.Latency)
	}
}

// BenchmarkParallelScrapes is the cost of one /stats scrape among many
// concurrent ones, 2000 histograms: with MaxAge 0 scrapes arriving together
// share a render; with 1s nearly all are served from the shared body.
func BenchmarkParallelScrapes(b *testing.B) {
	r := registry.New()
	for i := range 2000 {
		h := r.Histogram("bench.h" + strconv.Itoa(i))
		for j := range 16 {
			h.Update(float64(j * i))
		}
	}
	for _, maxAge := range []time.Duration{0, time.Second} {
		b.Run("MaxAge="+maxAge.String(), func(b *testing.B) {
			var renders atomic.Int64
			h := NewHandler(r, Options{MaxAge: maxAge, OnRender: func(time.Duration, int, error) { renders.Add(1) }})
			b.Cleanup(func() { b.ReportMetric(float64(renders.Load())/float64(b.N), "renders/op") })
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest("GET", "/stats", nil)
				for pb.Next() {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != 200 {
						b.Fatal(rec.Code)
					}
				}
			})
		})
	}
}
