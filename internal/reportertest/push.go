package reportertest

import (
	"bufio"
	"net"
	"net/http"
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

// StartRemoteWriteReceiver starts Prometheus on a free loopback port with
// a fresh data directory, scraping nothing, taking remote writes at
// URL+"/api/v1/write" with native histograms on
// (--web.enable-remote-write-receiver --enable-feature=native-histograms),
// and waits until it is ready. It is stopped when the test ends. Without
// the prometheus binary the test skips, or fails in CI.
func StartRemoteWriteReceiver(t testing.TB) *Prometheus {
	t.Helper()
	server, _ := testenv.Prometheus(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, []byte("global:\n  evaluation_interval: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "tcp")))
	p := &Prometheus{URL: "http://" + addr, t: t, done: make(chan struct{}), logPath: filepath.Join(dir, "prometheus.log")}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(server, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver",
		"--enable-feature=native-histograms", "--log.level=warn")
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
			t.Logf("Prometheus log:\n%s", log)
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
			t.Fatalf("prometheus not ready on %s within 30s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// OTLPReceiverBuild is the build step of the OTLP receiver
// (tests/otlpreceiver: the OpenTelemetry Collector's own otlpreceiver, a
// module of its own), for testenv.Builds.Path. Its first build takes about
// a minute on 2 cores; go's build cache makes later ones seconds.
func OTLPReceiverBuild() func(out string) error {
	return testenv.GoBuild("tests/otlpreceiver", ".")
}

// OTLPReceiver is a running OTLP/HTTP receiver writing every request it
// accepts as one JSON line (the Collector's pdata JSON, which is OTLP/JSON).
type OTLPReceiver struct {
	// URL is its metrics endpoint, "http://127.0.0.1:port/v1/metrics".
	URL string
	out string
}

// StartOTLPReceiver starts the receiver built at bin (see
// OTLPReceiverBuild) and waits until it listens. It is stopped when the
// test ends.
func StartOTLPReceiver(t testing.TB, bin string) *OTLPReceiver {
	t.Helper()
	r := &OTLPReceiver{out: filepath.Join(t.TempDir(), "metrics.jsonl")}
	cmd := exec.Command(bin, "-out", r.out)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				addr <- a
			}
		}
		cmd.Wait()
		close(done)
	}()
	select {
	case a := <-addr:
		r.URL = "http://" + a + "/v1/metrics"
		return r
	case <-done:
		t.Fatalf("otlpreceiver exited: %s", stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatal("otlpreceiver not listening within 60s")
	}
	return nil
}

// Requests returns every request received so far, one JSON document each.
func (r *OTLPReceiver) Requests(t testing.TB) [][]byte {
	t.Helper()
	data, err := os.ReadFile(r.out)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	// The last piece is "" or a line still being written.
	lines := strings.Split(string(data), "\n")
	var out [][]byte
	for _, l := range lines[:len(lines)-1] {
		out = append(out, []byte(l))
	}
	return out
}
