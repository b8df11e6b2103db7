package reportertest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
)

// Prometheus is a running Prometheus server.
type Prometheus struct {
	// URL is its base URL, "http://127.0.0.1:port".
	URL string

	t       testing.TB
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
}

// Sample is one element of an instant query result.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// ScrapeInterval is how often StartPrometheus's server scrapes its targets.
const ScrapeInterval = time.Second

// StartPrometheus starts Prometheus on a free loopback port with a fresh
// data directory, scraping every target each ScrapeInterval, and waits until
// it is ready. A target is a URL ("http://127.0.0.1:9100/metrics") or a
// host:port, which means http://host:port/metrics. Each target is its own job,
// "target0", "target1", ... It is stopped when the test ends.
//
// The first scraped samples become queryable only seconds after start; use
// WaitFor.
func StartPrometheus(t testing.TB, targets ...string) *Prometheus {
	t.Helper()
	return StartPrometheusWith(t, nil, targets...)
}

// StartPrometheusWith is StartPrometheus with more command-line flags, such
// as "--enable-feature=native-histograms" (Prometheus then scrapes the
// protobuf format).
func StartPrometheusWith(t testing.TB, flags []string, targets ...string) *Prometheus {
	t.Helper()
	server, _ := testenv.Prometheus(t)
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\nscrape_configs:\n",
		ScrapeInterval, ScrapeInterval, ScrapeInterval)
	for i, target := range targets {
		if !strings.Contains(target, "://") {
			target = "http://" + target + "/metrics"
		}
		u, err := url.Parse(target)
		if err != nil {
			t.Fatalf("StartPrometheus: target %q: %v", target, err)
		}
		path := u.Path
		if path == "" {
			path = "/metrics"
		}
		fmt.Fprintf(&cfg, "  - job_name: target%d\n    scheme: %s\n    metrics_path: %q\n    static_configs:\n      - targets: [%q]\n",
			i, u.Scheme, path, u.Host)
	}
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "tcp")))
	p := &Prometheus{URL: "http://" + addr, t: t, done: make(chan struct{}), logPath: filepath.Join(dir, "prometheus.log")}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(server, append([]string{
		"--config.file=" + config,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr,
		"--log.level=warn",
	}, flags...)...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			log, _ := os.ReadFile(p.logPath)
			t.Logf("Prometheus config:\n%s\nlog:\n%s", cfg.String(), log)
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			log, _ := os.ReadFile(p.logPath)
			t.Fatalf("prometheus exited at start; log:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(p.logPath)
			t.Fatalf("prometheus not ready on %s within 30s; log:\n%s", addr, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Query runs an instant query and returns its vector result.
func (p *Prometheus) Query(expr string) ([]Sample, error) {
	resp, err := http.Get(p.URL + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Error  string
		Data   struct {
			ResultType string
			Result     []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", expr, body.Error)
	}
	if body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s, want vector", expr, body.Data.ResultType)
	}
	out := make([]Sample, 0, len(body.Data.Result))
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: value %v: %w", expr, r.Value[1], err)
		}
		out = append(out, Sample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// WaitFor polls expr until cond holds for its result and returns that
// result; it fails the test after timeout.
func (p *Prometheus) WaitFor(expr string, timeout time.Duration, cond func([]Sample) bool) []Sample {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		res, err := p.Query(expr)
		if err == nil && cond(res) {
			return res
		}
		if time.Now().After(deadline) {
			targets := ""
			if resp, err := http.Get(p.URL + "/api/v1/targets"); err == nil {
				var b strings.Builder
				buf := make([]byte, 4096)
				n, _ := resp.Body.Read(buf)
				b.Write(buf[:n])
				resp.Body.Close()
				targets = b.String()
			}
			p.t.Fatalf("prometheus: %s did not meet the condition within %v; last result %v, error %v; targets: %s",
				expr, timeout, res, err, targets)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
