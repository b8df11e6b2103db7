package httpjson

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
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
