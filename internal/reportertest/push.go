package reportertest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
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
	return StartPrometheusWith(t, []string{"--web.enable-remote-write-receiver", "--enable-feature=native-histograms"})
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
