package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/internal/testenv"
)

// The examples' READMEs promise what these tests check: each example is
// built with go build, run as its own process on a free loopback port, sent
// real requests, and its numbers read back from /stats and /metrics.

func TestExampleSingle(t *testing.T) {
	ex := startExample(t, buildExample(t, "single"), "-addr", "127.0.0.1:0")
	for range 5 {
		ex.mustGet("/", 200, "finished")
	}
	for _, id := range []string{"1", "2", "3"} {
		ex.mustGet("/users/"+id, 200, "user "+id+"\n")
	}
	ex.mustGet("/users/x", 400, "bad user id\n")
	for range 2 {
		ex.mustGet("/fail", 500, "something broke\n")
	}
	st := ex.stats()
	wantStats(t, st, map[string]float64{
		"http.index.latency.count": 5,
		"http.users.latency.count": 4, // the 400 is timed too
		"http.fail.latency.count":  2,
		"http.index.errors.value":  0,
		"http.users.errors.value":  0, // 4xx is the client's error
		"http.fail.errors.value":   2,
		// tapeshttp's status-class counters
		"http.index.status.2xx.value": 5,
		"http.users.status.2xx.value": 3,
		"http.users.status.4xx.value": 1,
		"http.fail.status.5xx.value":  2,
	})
	checkLatencies(t, st, "http.index.latency")
	prom := ex.metrics()
	for _, want := range []string{
		"single_http_index_latency_seconds_count 5\n",
		"single_http_users_latency_seconds_count 4\n",
		"\nsingle_http_fail_errors 2\n",
		`single_http_index_latency_seconds{quantile="0.99"} `,
	} {
		if !strings.Contains(prom, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, prom)
		}
	}
	promtoolCheck(t, prom)
	ex.stop()
}

func TestExampleBind(t *testing.T) {
	ex := startExample(t, buildExample(t, "bind"), "-addr", "127.0.0.1:0")
	const users = "[\"ada\",\"grace\",\"linus\"]\n"
	for range 3 {
		ex.mustGet("/users", 200, users)
	}
	for range 2 {
		ex.mustGet("/orders?item=tea", 200, "ordered tea\n")
	}
	ex.mustGet("/orders", 400, "missing ?item=\n")
	st := ex.stats()
	wantStats(t, st, map[string]float64{
		"http.UsersHandler.latency.count":         3,
		"http.UsersHandler.requests.count":        3,
		"http.UsersHandler.response_bytes.count":  3,
		"http.UsersHandler.response_bytes.max":    float64(len(users)),
		"http.OrdersHandler.latency.count":        3,
		"http.OrdersHandler.requests.count":       3,
		"http.OrdersHandler.errors.value":         1,
		"http.OrdersHandler.response_bytes.count": 2,
		"http.OrdersHandler.response_bytes.min":   float64(len("ordered tea\n")),
	})
	if _, ok := lookup(st, "http.UsersHandler.errors.value"); ok {
		t.Errorf("UsersHandler declares no Errors field, but /stats has http.UsersHandler.errors")
	}
	checkLatencies(t, st, "http.UsersHandler.latency")
	prom := ex.metrics()
	for _, want := range []string{
		"bind_http_users_handler_latency_seconds_count 3\n",
		"\nbind_http_orders_handler_errors 1\n",
		"bind_http_orders_handler_requests_total 3\n",
	} {
		if !strings.Contains(prom, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, prom)
		}
	}
	promtoolCheck(t, prom)
	ex.stop()
}

// Two worker processes under tapes-host's supervisor share one port; the
// host's totals equal the requests sent, whichever worker served them.
func TestExampleWorkers(t *testing.T) {
	worker := buildExample(t, "workers")
	addr := freeAddr(t)
	h := startHost(t, "run", "-workers", "2", "-shm", filepath.Join(t.TempDir(), "ex.shm"),
		"-http", "127.0.0.1:0", "--", worker, "-addr", addr)
	waitFor(t, 30*time.Second, "both workers listening", func() bool {
		return strings.Count(h.stderr(), "listening on http://"+addr) == 2
	}, h.stderr)

	// New connections for every request, so that SO_REUSEPORT spreads them
	// over both workers; each /users answer names the pid that served it.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	const index, users, fails = 200, 60, 7
	for range index {
		httpGet(t, client, "http://"+addr+"/", 200, "finished")
	}
	pids := map[string]bool{}
	pidRE := regexp.MustCompile(`^user 42 \(served by pid (\d+)\)\n$`)
	for range users {
		body := httpGet(t, client, "http://"+addr+"/users/42", 200, "")
		m := pidRE.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("/users/42 answered %q", body)
		}
		pids[m[1]] = true
	}
	for range fails {
		httpGet(t, client, "http://"+addr+"/fail", 500, "something broke\n")
	}
	if len(pids) != 2 {
		t.Errorf("%d new connections were served by %d worker pids (%v), want both workers", users, len(pids), pids)
	}

	h.waitStat("http.index.latency.count", eq(index), "index requests over both workers")
	h.waitStat("http.users.latency.count", eq(users), "users requests")
	h.waitStat("http.fail.errors.value", eq(fails), "5xx answers")
	h.waitStat("http.users.status.2xx.value", eq(users), "2xx answers counted by tapeshttp over the shm client")
	h.waitStat("http.inflight.value", eq(0), "in-flight gauge summed over workers")
	h.waitStat("tapes.host.workers.running.value", eq(2), "supervised workers")
	prom := string(h.get("/metrics"))
	for _, want := range []string{
		fmt.Sprintf("http_index_latency_seconds_count %d\n", index),
		fmt.Sprintf("\nhttp_fail_errors %d\n", fails),
	} {
		if !strings.Contains(prom, want) {
			t.Errorf("host /metrics lacks %q", want)
		}
	}
	// SIGTERM reaches the workers through the supervisor; they close their
	// clients and the host exits cleanly.
	h.stop(syscall.SIGTERM)
}

func buildExample(t *testing.T, name string) string {
	return builds.Path(t, "example-"+name, testenv.GoBuild(".", "./examples/"+name))
}

// example is a running example server.
type example struct {
	t      *testing.T
	cmd    *exec.Cmd
	base   string
	mu     sync.Mutex
	out    bytes.Buffer
	exited chan struct{}
	err    error
}

var listeningLine = regexp.MustCompile(`listening on (http://[^\s)]+)`)

func startExample(t *testing.T, path string, args ...string) *example {
	t.Helper()
	ex := &example{t: t, cmd: exec.Command(path, args...), exited: make(chan struct{})}
	ex.cmd.Stderr = lockedWriter{&ex.mu, &ex.out}
	stdout, err := ex.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			ex.mu.Lock()
			ex.out.WriteString(sc.Text() + "\n")
			ex.mu.Unlock()
			if m := listeningLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case ready <- m[1]:
				default:
				}
			}
		}
		ex.err = ex.cmd.Wait()
		close(ex.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-ex.exited:
		default:
			_ = ex.cmd.Process.Kill()
			<-ex.exited
		}
	})
	select {
	case ex.base = <-ready:
	case <-ex.exited:
		t.Fatalf("%s exited before listening: %v\n%s", path, ex.err, ex.output())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not listening after 30s\n%s", path, ex.output())
	}
	return ex
}

func (ex *example) output() string { ex.mu.Lock(); defer ex.mu.Unlock(); return ex.out.String() }

func (ex *example) mustGet(path string, status int, body string) string {
	ex.t.Helper()
	return httpGet(ex.t, http.DefaultClient, ex.base+path, status, body)
}

func (ex *example) stats() map[string]any {
	ex.t.Helper()
	resp, err := http.Get(ex.base + "/stats")
	if err != nil {
		ex.t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		ex.t.Errorf("/stats Content-Type %q, want application/json", ct)
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		ex.t.Fatalf("/stats: %v", err)
	}
	return m
}

func (ex *example) metrics() string {
	ex.t.Helper()
	resp, err := http.Get(ex.base + "/metrics")
	if err != nil {
		ex.t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		ex.t.Errorf("/metrics Content-Type %q, want text/plain; version=0.0.4", ct)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		ex.t.Fatal(err)
	}
	return string(b)
}

// stop sends SIGTERM and requires a clean exit: the examples shut down
// gracefully.
func (ex *example) stop() {
	ex.t.Helper()
	if err := ex.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		ex.t.Fatal(err)
	}
	select {
	case <-ex.exited:
		if ex.err != nil {
			ex.t.Errorf("exit after SIGTERM: %v\n%s", ex.err, ex.output())
		}
	case <-time.After(30 * time.Second):
		ex.t.Errorf("no exit within 30s of SIGTERM")
	}
}

func httpGet(t *testing.T, c *http.Client, url string, status int, body string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status || (body != "" && string(b) != body) {
		t.Fatalf("GET %s: %d %q, want %d %q", url, resp.StatusCode, b, status, body)
	}
	return string(b)
}

func wantStats(t *testing.T, st map[string]any, want map[string]float64) {
	t.Helper()
	for path, w := range want {
		if got, ok := lookup(st, path); !ok || got != w {
			t.Errorf("%s = %v (found %v), want %v", path, got, ok, w)
		}
	}
}

// checkLatencies checks a timer's leaf holds real, ordered durations in
// seconds: positive, under the test's own run time, min <= q50 <= max.
func checkLatencies(t *testing.T, st map[string]any, timer string) {
	t.Helper()
	get := func(k string) float64 {
		v, ok := lookup(st, timer+"."+k)
		if !ok {
			t.Errorf("%s.%s missing", timer, k)
		}
		return v
	}
	lo, med, hi := get("min"), get("q50"), get("max")
	if !(lo > 0 && hi < 30 && lo <= hi && med >= lo*0.99 && med <= hi*1.01) {
		t.Errorf("%s: min %v q50 %v max %v: want 0 < min <= q50 <= max < 30s", timer, lo, med, hi)
	}
}

// promtoolCheck runs promtool check metrics on a /metrics body: exit 0
// means it parses with no lint warning.
func promtoolCheck(t *testing.T, body string) {
	t.Helper()
	promtool := testenv.Tool(t, "promtool", "prometheus")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreeLoopbackPort(t, "tcp")))
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool, diag func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v\n%s", what, d, diag())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
