package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every tapes-host self-metric the Grafana dashboard queries is a series a
// real tapes-host in supervisor mode exposes: a rename in the host without
// the dashboard fails here. (Names the dashboard matches by prefix, such
// as a plugin's tapes_host_plugins_<prefix>_*, exist only with plugins.)
func TestDashboardNamesExist(t *testing.T) {
	dash, err := os.ReadFile(filepath.Join("..", "dist", "grafana", "tapes.json"))
	if err != nil {
		t.Fatal(err)
	}
	h := startHost(t, "run", "-shm", filepath.Join(t.TempDir(), "d.shm"), "-http", "127.0.0.1:0",
		"-workers", "1", "--", testworkerBin(t), "-n", "10", "-hold")
	h.waitStat("test.requests.value", eq(10), "the worker's events")
	h.waitStat("tapes.host.http.stats.requests.value", func(v float64) bool { return v >= 1 }, "a /stats read")
	h.get("/metrics") // the renders histogram has a value from the second scrape on
	exposed := map[string]bool{}
	for _, line := range strings.Split(string(h.get("/metrics")), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			exposed[strings.Fields(name)[0]] = true
		}
	}
	names := regexp.MustCompile(`tapes_host_[a-z0-9_]*[a-z0-9]\b`).FindAllString(string(dash), -1)
	if len(names) < 10 {
		t.Fatalf("only %d names found in the dashboard", len(names))
	}
	// Series that appear only once something happens.
	conditional := map[string]string{
		"tapes_host_shm_dropped": "a worker's own drop count, created at its first dropped event",
	}
	for _, n := range names {
		if !exposed[n] && conditional[n] == "" {
			t.Errorf("the dashboard queries %s, which tapes-host does not expose", n)
		}
	}
}
