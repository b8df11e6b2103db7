// Package reportertest starts the real servers that this repository's
// integration tests report to (the reporters' and tapes-host's), on
// loopback ports, with temporary files, stopped when the test ends.
//
//   - StartStatsD: Etsy's StatsD daemon (node) with a JSON-lines backend, so
//     a test reads back exactly what StatsD aggregated in each flush.
//   - StartPrometheus: the Prometheus server scraping given targets, queried
//     through its HTTP API.
//
// Where a server is not installed, the test fails under CI=true and is
// skipped elsewhere with the install command (see internal/testenv);
// scripts/install-deps.sh installs both.
package reportertest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
)

// Flush is what StatsD handed its backends at one flush. Counters hold what
// arrived since the previous flush (StatsD resets them every flush); gauges
// hold their current values; Timers the raw values received in the interval.
type Flush struct {
	Timestamp int64                                 `json:"ts"`
	Counters  map[string]float64                    `json:"counters"`
	Gauges    map[string]float64                    `json:"gauges"`
	Timers    map[string][]float64                  `json:"timers"`
	TimerData map[string]map[string]json.RawMessage `json:"timer_data"`
}

// Flushes is a sequence of flushes, oldest first.
type Flushes []Flush

// Counter returns the sum of the counter name over the flushes: everything
// StatsD received for it.
func (fl Flushes) Counter(name string) float64 {
	var sum float64
	for _, f := range fl {
		sum += f.Counters[name]
	}
	return sum
}

// Gauge returns the last value of gauge name, if any flush had it.
func (fl Flushes) Gauge(name string) (float64, bool) {
	for i := len(fl) - 1; i >= 0; i-- {
		if v, ok := fl[i].Gauges[name]; ok {
			return v, true
		}
	}
	return 0, false
}

// Timer returns every value timer name received, in order.
func (fl Flushes) Timer(name string) []float64 {
	var vs []float64
	for _, f := range fl {
		vs = append(vs, f.Timers[name]...)
	}
	return vs
}

// Names returns every counter, gauge and timer name seen.
func (fl Flushes) Names() map[string]string {
	n := map[string]string{}
	for _, f := range fl {
		for k := range f.Counters {
			n[k] = "counter"
		}
		for k := range f.Gauges {
			n[k] = "gauge"
		}
		for k := range f.Timers {
			n[k] = "timer"
		}
	}
	return n
}

// StatsD is a running Etsy StatsD daemon.
type StatsD struct {
	// Addr is the UDP address it listens on, "127.0.0.1:port".
	Addr string

	t        testing.TB
	node     string
	statsJS  string
	dir      string
	config   string
	out      string
	logPath  string
	interval time.Duration

	mu  sync.Mutex
	cmd *exec.Cmd
}

// ProbeCounter is the counter StartStatsD sends until it sees it flushed,
// to know the daemon is ready; tests may see it in Flushes.
const ProbeCounter = "reportertest.probe"

// backendJS writes every flush as one JSON line to config.jsonLinesFile.
const backendJS = `const fs = require('fs');
exports.init = function (startupTime, config, events) {
  events.on('flush', function (ts, metrics) {
    fs.appendFileSync(config.jsonLinesFile, JSON.stringify({
      ts: ts, counters: metrics.counters, gauges: metrics.gauges,
      timers: metrics.timers, timer_data: metrics.timer_data,
    }) + "\n");
  });
  return true;
};
`

// StartStatsD starts StatsD on a free loopback UDP port, flushing every
// 200 ms, and waits until it aggregates. It is stopped when the test ends.
func StartStatsD(t testing.TB) *StatsD {
	t.Helper()
	node, statsJS := testenv.StatsD(t)
	dir := t.TempDir()
	s := &StatsD{
		t: t, node: node, statsJS: statsJS, dir: dir,
		config:   filepath.Join(dir, "config.js"),
		out:      filepath.Join(dir, "flushes.jsonl"),
		logPath:  filepath.Join(dir, "statsd.log"),
		interval: 200 * time.Millisecond,
	}
	backend := filepath.Join(dir, "jsonlines_backend.js")
	if err := os.WriteFile(backend, []byte(backendJS), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "udp")))
	_, port, _ := net.SplitHostPort(s.Addr)
	cfg := map[string]any{
		"address":               "127.0.0.1",
		"port":                  mustAtoi(port),
		"mgmt_address":          "127.0.0.1",
		"mgmt_port":             freePort(t, "tcp"),
		"flushInterval":         int(s.interval / time.Millisecond),
		"backends":              []string{backend},
		"jsonLinesFile":         s.out,
		"automaticConfigReload": false,
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(s.config, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			log, _ := os.ReadFile(s.logPath)
			t.Logf("StatsD log:\n%s", log)
		}
	})
	s.start()
	return s
}

func mustAtoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB, network string) int {
	t.Helper()
	return testenv.FreeLoopbackPort(t, network)
}

func (s *StatsD) start() {
	s.t.Helper()
	before := len(s.Flushes())
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(s.node, s.statsJS, s.config)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting StatsD: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()

	// Ready means a counter sent now comes out of a flush: the UDP socket
	// is bound and the backend is loaded.
	conn, err := net.Dial("udp", s.Addr)
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		conn.Write([]byte(ProbeCounter + ":1|c"))
		if Flushes(s.Flushes()[before:]).Counter(ProbeCounter) > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(s.logPath)
	s.t.Fatalf("StatsD on %s not ready within 20s; log:\n%s", s.Addr, log)
}

// Flushes returns every flush so far, across restarts.
func (s *StatsD) Flushes() Flushes {
	b, err := os.ReadFile(s.out)
	if err != nil {
		return nil
	}
	var fl Flushes
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var f Flush
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			break // a line being written
		}
		fl = append(fl, f)
	}
	return fl
}

// WaitFor polls the flushes since flush number from (0 for all) until cond
// holds, and returns them; it fails the test after timeout.
func (s *StatsD) WaitFor(from int, timeout time.Duration, cond func(Flushes) bool) Flushes {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		fl := s.Flushes()
		if from <= len(fl) {
			fl = fl[from:]
		} else {
			fl = nil
		}
		if cond(fl) {
			return fl
		}
		if time.Now().After(deadline) {
			last := "none"
			if len(fl) > 0 {
				b, _ := json.Marshal(fl[len(fl)-1])
				last = string(b)
			}
			s.t.Fatalf("StatsD: condition not met within %v over %d flushes; last flush: %s", timeout, len(fl), last)
		}
		time.Sleep(s.interval / 2)
	}
}

// Stop stops the daemon (SIGTERM, which makes StatsD flush one last time)
// and waits for it to exit. Stopping a stopped daemon does nothing.
func (s *StatsD) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// Restart starts a stopped daemon again on the same port and file, for tests
// of reporters recovering from a StatsD outage.
func (s *StatsD) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// String describes the daemon for test logs.
func (s *StatsD) String() string { return fmt.Sprintf("StatsD(%s, %s)", s.Addr, s.dir) }
