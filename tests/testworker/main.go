// Command testworker is a worker process for the end-to-end tests: it
// records a known sequence through the shm client (TAPES_SHM) and then
// exits cleanly, crashes, or keeps recording until SIGTERM. It exits 4 when
// the shm file has no free slot (shm.ErrNoSlot).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tapes-go/tapes/internal/fleetdata"
	"github.com/tapes-go/tapes/shm"
)

func main() {
	n := flag.Int("n", 1000, "events of each kind to record")
	prefix := flag.String("prefix", "test", "metric name prefix")
	crash := flag.Bool("crash", false, "exit with status 3 without closing the client (a crash)")
	hold := flag.Bool("hold", false, "after the sequence, keep recording one counter event every 10ms until SIGTERM")
	rate := flag.Int("rate", 100, "with -hold, counter events a second: one every 1/rate s up to 1,000, else rate/1,000 at once every millisecond (a busy worker's bursts)")
	fleet := flag.Uint64("fleet", 0, "instead of the sequence, record fleetdata.Values(seed, route, n) as timer fleet.<route>.latency for every route, with this seed")
	flag.Parse()

	c, err := shm.OpenEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		if errors.Is(err, shm.ErrNoSlot) {
			os.Exit(4) // refused: the end-to-end tests count these
		}
		os.Exit(1)
	}
	if *fleet != 0 {
		for route := range fleetdata.Routes {
			t := c.Timer("fleet." + route + ".latency")
			for _, d := range fleetdata.Values(*fleet, route, *n) {
				t.Update(d)
			}
			c.Counter("fleet." + route + ".requests").Add(int64(*n))
		}
		c.Flush()
		fmt.Printf("recorded %d\n", *n)
		if err := c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "testworker: close:", err)
			os.Exit(1)
		}
		return
	}
	requests := c.Counter(*prefix + ".requests")
	latency := c.Timer(*prefix + ".latency")
	jobs := c.Meter(*prefix + ".jobs")
	sizes := c.Histogram(*prefix + ".sizes")
	for i := 1; i <= *n; i++ {
		requests.Inc()
		latency.Update(time.Duration(i) * time.Microsecond)
		jobs.Mark(2)
		sizes.Update(float64(i))
	}
	c.Flush()
	fmt.Printf("recorded %d\n", *n)
	if *crash {
		os.Exit(3)
	}
	if *hold {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		ticks := c.Counter(*prefix + ".ticks")
		every, burst := time.Second/time.Duration(max(*rate, 1)), 1
		if *rate > 1000 {
			every, burst = time.Millisecond, *rate/1000
		}
		t := time.NewTicker(every)
	loop:
		for {
			select {
			case <-sig:
				break loop
			case <-t.C:
				for range burst {
					ticks.Inc()
				}
			}
		}
		// The last events before the signal must reach the host's final
		// report; record a marker right before exiting.
		c.Counter(*prefix + ".stopped").Inc()
	}
	if err := c.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "testworker: close:", err)
		os.Exit(1)
	}
}
