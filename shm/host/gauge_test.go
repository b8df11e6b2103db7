package host

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
)

func init() { roles["gauger"] = roleGauger }

var gaugeModes = map[string]shm.GaugeMode{"sum": shm.GaugeSum, "min": shm.GaugeMin, "max": shm.GaugeMax, "last": shm.GaugeLast, "pw": shm.GaugePerWorker}

// roleGauger defines one gauge per mode (g.<mode>) plus a function gauge
// g.fn, sets them to GAUGE_V (the function returns GAUGE_V+1), then obeys
// stdin: "set V" sets the settable gauges, "exit" closes the client.
func roleGauger() int {
	c, err := OpenEnv(shm.WithSampleInterval(5 * time.Millisecond))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	v := float64(envInt("GAUGE_V"))
	for name, mode := range gaugeModes {
		if err := c.GaugeMode("g."+name, mode); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	set := func(v float64) {
		for name := range gaugeModes {
			c.Gauge("g."+name, nil).Set(v)
		}
	}
	set(v)
	c.Gauge("g.fn", func() float64 { return v + 1 })
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "set":
			x, _ := strconv.ParseFloat(f[1], 64)
			set(x)
		case len(f) == 1 && f[0] == "exit":
			c.Close()
			fmt.Println("ok")
			return 0
		}
		fmt.Println("ok")
	}
	return 0
}

type gauger struct {
	pid  int
	in   io.Writer
	out  *bufio.Reader
	wait func() error
	kill func()
}

func startGauger(t *testing.T, path string, v int) *gauger {
	cmd := child(t, "gauger", shm.EnvVar+"="+path, "GAUGE_V="+strconv.Itoa(v))
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	g := &gauger{pid: cmd.Process.Pid, in: in, out: bufio.NewReader(out), wait: cmd.Wait,
		kill: func() { cmd.Process.Signal(syscall.SIGKILL) }}
	expectLine(t, g.out, "ready")
	return g
}

func (g *gauger) do(t *testing.T, cmd string) {
	t.Helper()
	io.WriteString(g.in, cmd+"\n")
	expectLine(t, g.out, "ok")
}

func gaugeValue(t *testing.T, r *registry.Registry, name string) (float64, bool) {
	t.Helper()
	m, ok := r.Get(name)
	if !ok {
		return 0, false
	}
	g, ok := m.(*registry.Gauge)
	if !ok {
		t.Fatalf("%s is a %v", name, m.Kind())
	}
	return g.Value(), true
}

func wantGauges(t *testing.T, r *registry.Registry, want map[string]float64) {
	t.Helper()
	for name, w := range want {
		got, ok := gaugeValue(t, r, name)
		if w != w { // NaN: must not exist
			if ok {
				t.Errorf("%s exists (%v), want it gone", name, got)
			}
			continue
		}
		if !ok || got != w {
			t.Errorf("%s = %v (exists %v), want %v", name, got, ok, w)
		}
	}
}

// TestGaugeModes runs three worker processes holding a gauge of each mode,
// then kills one, closes another and restarts the host.
func TestGaugeModes(t *testing.T) {
	h := newHost(t, Config{Slots: 4, RingRecords: 64})
	r := h.Registry()
	drain := func() {
		t.Helper()
		if _, err := h.DrainOnce(); err != nil {
			t.Fatal(err)
		}
	}
	var ws []*gauger
	for _, v := range []int{10, 30, 20} {
		ws = append(ws, startGauger(t, h.Path(), v))
		drain() // fixes the drain order, which shm.GaugeLast reports
	}
	pw := func(k int) string { return fmt.Sprintf("g.pw.pid-%d", ws[k].pid) }
	nan := func() float64 { var z float64; return z / z }()
	wantGauges(t, r, map[string]float64{
		"g.sum": 60, "g.min": 10, "g.max": 30, "g.last": 20, "g.fn": 63,
		pw(0): 10, pw(1): 30, pw(2): 20, "g.pw": nan,
	})

	ws[0].do(t, "set 11")
	drain()
	wantGauges(t, r, map[string]float64{"g.sum": 61, "g.min": 11, "g.max": 30, "g.last": 11, pw(0): 11})

	ws[0].kill()
	ws[0].wait()
	drain()
	wantGauges(t, r, map[string]float64{
		"g.sum": 50, "g.min": 20, "g.max": 30, "g.last": 20, "g.fn": 52,
		pw(0): nan, pw(1): 30, pw(2): 20,
	})

	ws[2].do(t, "exit")
	ws[2].wait()
	drain()
	wantGauges(t, r, map[string]float64{
		"g.sum": 30, "g.min": 30, "g.max": 30, "g.last": 30, "g.fn": 31,
		pw(1): 30, pw(2): nan,
	})

	// A new host learns the current values from the definition table, not
	// from records (those were drained by the old host).
	path := h.Path()
	h.Close()
	h2, err := Create(path, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	r2 := h2.Registry()
	if _, err := h2.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	wantGauges(t, r2, map[string]float64{"g.sum": 30, "g.min": 30, "g.max": 30, "g.last": 30, "g.fn": 31, pw(1): 30})

	ws[1].kill()
	ws[1].wait()
	if _, err := h2.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	// No live worker defines them any more: they leave the registry, as a
	// per-worker series does, and the host keeps nothing for them.
	wantGauges(t, r2, map[string]float64{"g.sum": nan, "g.min": nan, "g.max": nan, "g.last": nan, "g.fn": nan, pw(1): nan})
	if len(h2.aggs) != 0 {
		t.Errorf("%d gauge aggregates left after every worker left", len(h2.aggs))
	}
	if v := r2.Counter("tapes.shm.rejected").Value(); v != 0 {
		t.Errorf("rejected = %d", v)
	}
}
