// Command shmload is the worker process of the end-to-end transport
// benchmarks in bench/shm_e2e_test.go: it records -n events (a counter and
// a timer alternating) as fast as it can through one transport and prints
// "sent N dropped D cpu C" (D is what the transport itself reports
// dropping, and only the shm client can know; C is the CPU nanoseconds the
// process used from the go-ahead until it finished sending). With -wait it
// first prints "ready" once connected and waits for a line on stdin.
//
//	shmload -transport shm -n 1000000              # file from $TAPES_SHM
//	shmload -transport statsd -addr 127.0.0.1:8125 -n 100000
//	shmload -transport statsd-buffered -addr 127.0.0.1:8125 -n 100000
//	shmload -transport zmq -addr tcp://127.0.0.1:5555 -n 100000
//	shmload -transport hold -clients 200      # 200 slots, 100 events/s each, until killed
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/cactus/go-statsd-client/v5/statsd"
	"github.com/go-zeromq/zmq4"

	"github.com/tapes-go/tapes/bench/internal/proc"
	"github.com/tapes-go/tapes/shm"
	"github.com/tapes-go/tapes/shm/host"
)

func main() {
	transport := flag.String("transport", "shm", "shm, statsd, statsd-buffered, zmq, or idle-host (drain $TAPES_SHM and report the CPU it used)")
	addr := flag.String("addr", "", "receiver address (statsd: host:port, zmq: tcp://host:port)")
	n := flag.Int("n", 100000, "events to send")
	flag.BoolVar(&wait, "wait", false, "after connecting, wait for a byte on stdin before sending")
	idle := flag.Duration("idle", time.Second, "idle-host: how long to measure")
	clients := flag.Int("clients", 1, "hold: clients (slots) in this process, each recording one counter event every 10 ms at its own phase")
	flag.Parse()
	var dropped uint64
	var err error
	switch *transport {
	case "shm":
		dropped, err = runShm(*n)
	case "statsd", "statsd-buffered":
		err = runStatsd(*addr, *n, *transport == "statsd-buffered")
	case "zmq":
		err = runZmq(*addr, *n)
	case "idle-host":
		err = runIdleHost(*idle)
	case "hold":
		err = runHold(*clients)
	default:
		err = fmt.Errorf("unknown transport %q", *transport)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shmload:", err)
		os.Exit(1)
	}
	if *transport != "idle-host" {
		fmt.Printf("sent %d dropped %d cpu %d\n", *n, dropped, (proc.CPU() - cpu0).Nanoseconds())
	}
}

// runIdleHost attaches a host to the file in $TAPES_SHM, lets it reach its
// idle back-off, and prints the CPU the whole process used over d as a
// percentage of one core: a process of its own, so that nothing a
// benchmark left running elsewhere is counted.
func runIdleHost(d time.Duration) error {
	h, err := host.Create(os.Getenv(shm.EnvVar), host.Config{})
	if err != nil {
		return err
	}
	defer h.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Drain(ctx) }()
	time.Sleep(100 * time.Millisecond)
	cpu0, t0 := proc.CPU(), time.Now()
	time.Sleep(d)
	pct := 100 * float64(proc.CPU()-cpu0) / float64(time.Since(t0))
	cancel()
	if err := <-done; err != nil {
		return err
	}
	fmt.Printf("cpu-%% %f\n", pct)
	return nil
}

// runHold is the background load of BenchmarkShmLatency/load: many
// clients trickling events, as many worker processes would (each slot
// rings its own doorbell bit), in one process so that a benchmark can
// start 200 of them cheaply. It prints "ready" once every client recorded
// its first event and runs until killed.
func runHold(n int) error {
	var cs []*shm.Client
	for i := 0; i < n; i++ {
		c, err := shm.OpenEnv()
		if err != nil {
			return err
		}
		cs = append(cs, c)
	}
	for i, c := range cs {
		ctr := c.Counter("hold.ticks")
		ctr.Inc()
		go func() {
			time.Sleep(time.Duration(i) * 10 * time.Millisecond / time.Duration(n)) // spread the phases
			for t := time.NewTicker(10 * time.Millisecond); ; <-t.C {
				ctr.Inc()
			}
		}()
	}
	fmt.Println("ready")
	select {}
}

var (
	wait bool
	cpu0 time.Duration
)

// goAhead blocks until the benchmark says go, so that all workers start
// sending together and neither their set-up time nor its CPU is counted.
func goAhead() {
	if wait {
		fmt.Println("ready")
		var b [1]byte
		os.Stdin.Read(b[:])
	}
	cpu0 = proc.CPU()
}

func runShm(n int) (uint64, error) {
	c, err := shm.OpenEnv()
	if err != nil {
		return 0, err
	}
	ctr := c.Counter("e2e.count")
	tmr := c.Timer("e2e.time")
	goAhead()
	for i := 0; i < n; i++ {
		if i&1 == 0 {
			ctr.Inc()
		} else {
			tmr.Update(time.Duration(i))
		}
	}
	d := c.Dropped()
	return d, c.Close()
}

func runStatsd(addr string, n int, buffered bool) error {
	cfg := &statsd.ClientConfig{Address: addr}
	if buffered {
		cfg.UseBuffered = true
		cfg.FlushInterval = 10 * time.Millisecond
		cfg.FlushBytes = 1432
	}
	c, err := statsd.NewClientWithConfig(cfg)
	if err != nil {
		return err
	}
	goAhead()
	for i := 0; i < n; i++ {
		if i&1 == 0 {
			err = c.Inc("e2e.count", 1, 1)
		} else {
			err = c.Timing("e2e.time", int64(i), 1)
		}
		if err != nil {
			return err
		}
	}
	return c.Close()
}

// runZmq publishes one message per event, as tapes' original distributed
// mode did, in StatsD-like text so that the receiver's parsing costs the same.
func runZmq(addr string, n int) error {
	pub := zmq4.NewPub(context.Background())
	defer pub.Close()
	if err := pub.Dial(addr); err != nil {
		return err
	}
	// A PUB socket drops everything sent before the subscription reaches
	// it, so always wait for the subscriber's go-ahead.
	wait = true
	goAhead()
	buf := make([]byte, 0, 64)
	for i := 0; i < n; i++ {
		buf = buf[:0]
		if i&1 == 0 {
			buf = append(buf, "e2e.count:1|c"...)
		} else {
			buf = append(buf, "e2e.time:"...)
			buf = strconv.AppendInt(buf, int64(i), 10)
			buf = append(buf, "|ms"...)
		}
		if err := pub.Send(zmq4.NewMsg(append([]byte(nil), buf...))); err != nil {
			return err
		}
	}
	// Give the socket's writer time to flush before Close discards the queue.
	time.Sleep(100 * time.Millisecond)
	return nil
}
