package httpserver

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/reporters/prometheus"
)

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestServesStatsAndMetricsOnLoopback(t *testing.T) {
	r := registry.New()
	r.Counter("jobs.done").Add(5)
	for _, addr := range []string{"", ":0", "127.0.0.1:0"} {
		s, err := Start(addr, r, Options{Prometheus: prometheus.Options{Namespace: "app"}})
		if err != nil {
			t.Fatal(err)
		}
		host, port, _ := net.SplitHostPort(s.Addr())
		if host != "127.0.0.1" || port == "0" {
			t.Fatalf("Start(%q) listens on %s, want 127.0.0.1 and a real port", addr, s.Addr())
		}

		resp, body := get(t, s.URL()+"/stats")
		var tree map[string]any
		if resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &tree) != nil {
			t.Fatalf("/stats: %s %q", resp.Header.Get("Content-Type"), body)
		}
		if v := tree["jobs"].(map[string]any)["done"].(map[string]any)["value"]; v != 5.0 {
			t.Fatalf("/stats jobs.done = %v", v)
		}
		resp, body = get(t, s.URL()+"/metrics")
		if resp.Header.Get("Content-Type") != prometheus.ContentType || !strings.Contains(body, "\napp_jobs_done 5\n") {
			t.Fatalf("/metrics: %s\n%s", resp.Header.Get("Content-Type"), body)
		}
		if resp, _ := get(t, s.URL()+"/other"); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("/other: status %d", resp.StatusCode)
		}

		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := http.Get(s.URL() + "/stats"); err == nil {
			t.Fatal("server still answers after Shutdown")
		}
	}
}

func TestAllInterfacesIsExplicit(t *testing.T) {
	s, err := Start("0.0.0.0:0", registry.New(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Go reports a dual-stack wildcard listener as [::].
	if host, _, _ := net.SplitHostPort(s.Addr()); !net.ParseIP(host).IsUnspecified() {
		t.Fatalf("Start(0.0.0.0:0) listens on %s", s.Addr())
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := Start("no-port", registry.New(), Options{}); err == nil {
		t.Error("Start accepted an address without a port")
	}
	if _, err := Start("", nil, Options{}); err == nil {
		t.Error("Start accepted a nil registry")
	}
	s, err := Start("", registry.New(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := Start(s.Addr(), registry.New(), Options{}); err == nil {
		s2.Close()
		t.Error("Start succeeded on a port in use")
	}
}
