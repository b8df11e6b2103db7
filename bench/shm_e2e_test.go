package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/tapes-go/tapes/bench/internal/proc"
	"github.com/tapes-go/tapes/internal/testenv"
	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/host"
)

// The end-to-end comparison: worker processes (bench/cmd/shmload) send a
// counter/timer mix to a receiver in this process that applies every event
// to a registry, through the shm file, one StatsD UDP packet per event
// (go-statsd-client, plain), buffered StatsD packets, and ZeroMQ pub-sub
// (tapes' original distributed mode). Reported per transport:
//
//	events/s      events applied to the receiver's registry per second of wall time
//	loss-%        events sent but never applied (shm: dropped by a full ring)
//	cpu-ns/event  CPU time of the workers and the receiver process per applied event
//
// Workers connect first (shm: claim a slot and map their ring, which the
// host then binds), say so, and start sending together on a go-ahead, so
// neither the wall time nor the CPU time counts process start-up and
// connection set-up: both run from the go-ahead until the receiver applied
// the last event (workers: until they finished sending).

const e2eWorkers = 2

func shmload(b *testing.B) string {
	return builds.Path(b, "shmload", testenv.GoBuild("bench", "./cmd/shmload"))
}

type e2eRun struct {
	sent, applied, dropped int64
	wall, cpu              time.Duration
}

func (r e2eRun) report(b *testing.B) {
	b.ReportMetric(float64(r.applied)/r.wall.Seconds(), "events/s")
	b.ReportMetric(100*float64(r.sent-r.applied)/float64(r.sent), "loss-%")
	if r.applied > 0 {
		b.ReportMetric(float64(r.cpu.Nanoseconds())/float64(r.applied), "cpu-ns/event")
	}
}

type workers struct {
	cmds []*exec.Cmd
	ins  []io.WriteCloser
	outs []*bufio.Reader
}

// startWorkers starts the workers and returns once each has connected and
// is waiting for the go-ahead.
func startWorkers(b *testing.B, env []string, args ...string) *workers {
	w := &workers{}
	for i := 0; i < e2eWorkers; i++ {
		cmd := exec.Command(shmload(b), append(args, "-wait")...)
		cmd.Env = append(os.Environ(), env...)
		in, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		w.cmds, w.ins, w.outs = append(w.cmds, cmd), append(w.ins, in), append(w.outs, bufio.NewReader(out))
	}
	// A worker that fails or hangs must not outlive the benchmark.
	b.Cleanup(func() {
		for _, cmd := range w.cmds {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		}
	})
	for i, out := range w.outs {
		ready := make(chan error, 1)
		go func() {
			line, err := out.ReadString('\n')
			if err == nil && line != "ready\n" {
				err = fmt.Errorf("said %q", line)
			}
			ready <- err
		}()
		select {
		case err := <-ready:
			if errors.Is(err, io.EOF) { // it exited (its stderr is ours)
				err = fmt.Errorf("%w before saying ready; exit: %v", err, w.cmds[i].Wait())
			}
			if err != nil {
				b.Fatalf("worker %d: %v", i, err)
			}
		case <-time.After(time.Minute):
			b.Fatalf("worker %d not ready after a minute", i)
		}
	}
	return w
}

func (w *workers) goAhead() {
	for _, in := range w.ins {
		in.Write([]byte{'\n'})
		in.Close()
	}
}

// wait returns the CPU time the workers reported using from the go-ahead
// on, and the drops they reported.
func (w *workers) wait(b *testing.B) (cpu time.Duration, dropped int64) {
	for i, cmd := range w.cmds {
		out, rerr := io.ReadAll(w.outs[i])
		if err := cmd.Wait(); err != nil || rerr != nil {
			b.Fatalf("worker: %v %v (%s)", err, rerr, out)
		}
		var sent, d, ns int64
		if _, err := fmt.Sscanf(string(out), "sent %d dropped %d cpu %d", &sent, &d, &ns); err != nil {
			b.Fatalf("worker said %q: %v", out, err)
		}
		cpu += time.Duration(ns)
		dropped += d
	}
	return cpu, dropped
}

// textApplier applies StatsD-format lines ("name:value|c" or "|ms") to a
// registry, as a StatsD-speaking receiver would.
type textApplier struct {
	r       *registry.Registry
	applied atomic.Int64
	last    atomic.Int64 // unix nanos of the last applied event
}

func (a *textApplier) apply(p []byte) {
	n := int64(0)
	for len(p) > 0 {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p = p[:i], p[i+1:]
		} else {
			p = nil
		}
		c := bytes.IndexByte(line, ':')
		bar := bytes.IndexByte(line, '|')
		if c < 0 || bar < c {
			continue
		}
		v, err := strconv.ParseInt(string(line[c+1:bar]), 10, 64)
		if err != nil {
			continue
		}
		name := string(line[:c])
		switch string(line[bar+1:]) {
		case "c":
			a.r.Counter(name).Add(v)
		case "ms":
			a.r.Timer(name).Update(time.Duration(v) * time.Millisecond)
		default:
			continue
		}
		n++
	}
	a.applied.Add(n)
	a.last.Store(time.Now().UnixNano())
}

// settle waits until no event has been applied for quiet, and returns the
// time of the last one.
func (a *textApplier) settle(quiet time.Duration) time.Time {
	for {
		last := a.last.Load()
		time.Sleep(quiet)
		if a.last.Load() == last {
			return time.Unix(0, last)
		}
	}
}

func BenchmarkTransportE2E(b *testing.B) {
	// Rings big enough for the whole burst: the host drains as fast as it
	// can while the workers write, and nothing is dropped.
	b.Run("shm", func(b *testing.B) { benchE2EShm(b, 1<<21, 2_000_000) })
	// The default 16Ki-record ring against producers that write ~150 M
	// events/s each (5-6 ns a record), far faster than any host applies them: most events
	// are dropped (and counted), which this row shows.
	b.Run("shm-default-ring", func(b *testing.B) { benchE2EShm(b, host.DefaultRingRecords, 2_000_000) })
	b.Run("statsd", func(b *testing.B) { benchE2EStatsd(b, false) })
	b.Run("statsd-buffered", func(b *testing.B) { benchE2EStatsd(b, true) })
	b.Run("zmq", benchE2EZmq)
}

func benchE2EShm(b *testing.B, ring, perWorker int) {
	for i := 0; i < b.N; i++ {
		h := shmHost(b, host.Config{Slots: 4, RingRecords: ring})
		r := h.Registry()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.Drain(ctx) }()
		w := startWorkers(b, []string{shm.EnvVar + "=" + h.Path()}, "-transport", "shm", "-n", strconv.Itoa(perWorker))
		// A worker's Open wakes the host, which binds its slot and counts it.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Microsecond) {
			if g, _ := r.Get(host.DefaultPrefix + ".workers"); g != nil && g.(*registry.Gauge).Value() == e2eWorkers {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the host did not count the workers within 10s")
			}
		}
		cpu0 := proc.CPU()
		t0 := time.Now()
		w.goAhead()
		wcpu, dropped := w.wait(b)
		sent := int64(e2eWorkers * perWorker)
		applied := func() int64 {
			c, _ := r.Get("e2e.count")
			t, _ := r.Get("e2e.time")
			if c == nil || t == nil {
				return 0
			}
			return c.(*registry.Counter).Value() + int64(t.(*registry.Timer).Count())
		}
		for applied()+dropped < sent {
			time.Sleep(50 * time.Microsecond)
			if time.Since(t0) > 30*time.Second {
				// A host that stopped draining: say where, instead of
				// waiting for the test binary's timeout.
				pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
				b.Fatalf("after 30 s, %d applied + %d dropped of %d sent", applied(), dropped, sent)
			}
		}
		wall := time.Since(t0)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		run := e2eRun{sent: sent, applied: applied(), dropped: dropped, wall: wall, cpu: proc.CPU() - cpu0 + wcpu}
		if run.applied+run.dropped != sent {
			b.Fatalf("applied %d + dropped %d != sent %d", run.applied, run.dropped, sent)
		}
		run.report(b)
		h.Close()
	}
}

func benchE2EStatsd(b *testing.B, buffered bool) {
	perWorker := 100_000
	transport := "statsd"
	if buffered {
		perWorker, transport = 1_000_000, "statsd-buffered"
	}
	for i := 0; i < b.N; i++ {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		conn.SetReadBuffer(8 << 20)
		a := &textApplier{r: registry.New()}
		go func() {
			buf := make([]byte, 65536)
			for {
				n, _, err := conn.ReadFromUDP(buf)
				if err != nil {
					return
				}
				a.apply(buf[:n])
			}
		}()
		w := startWorkers(b, nil, "-transport", transport, "-addr", conn.LocalAddr().String(), "-n", strconv.Itoa(perWorker))
		cpu0 := proc.CPU()
		t0 := time.Now()
		w.goAhead()
		wcpu, _ := w.wait(b)
		end := a.settle(100 * time.Millisecond)
		conn.Close()
		sent := int64(e2eWorkers * perWorker)
		e2eRun{sent: sent, applied: a.applied.Load(), wall: end.Sub(t0), cpu: proc.CPU() - cpu0 + wcpu}.report(b)
	}
}

func benchE2EZmq(b *testing.B) {
	const perWorker = 200_000
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		sub := zmq4.NewSub(ctx)
		if err := sub.Listen("tcp://127.0.0.1:0"); err != nil {
			b.Fatal(err)
		}
		if err := sub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
			b.Fatal(err)
		}
		a := &textApplier{r: registry.New()}
		go func() {
			for {
				m, err := sub.Recv()
				if err != nil {
					return
				}
				for _, f := range m.Frames {
					a.apply(f)
				}
			}
		}()
		addr := "tcp://" + strings.TrimPrefix(sub.Addr().String(), "tcp://")
		w := startWorkers(b, nil, "-transport", "zmq", "-addr", addr, "-n", strconv.Itoa(perWorker))
		time.Sleep(300 * time.Millisecond) // subscriptions must reach the publishers
		cpu0 := proc.CPU()
		t0 := time.Now()
		w.goAhead()
		wcpu, _ := w.wait(b)
		end := a.settle(150 * time.Millisecond)
		sub.Close()
		cancel()
		sent := int64(e2eWorkers * perWorker)
		e2eRun{sent: sent, applied: a.applied.Load(), wall: end.Sub(t0), cpu: proc.CPU() - cpu0 + wcpu}.report(b)
	}
}
