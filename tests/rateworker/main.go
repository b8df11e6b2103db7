// Command rateworker is a worker process for the HTTP attack tests: it
// fills the host's registry with histograms and records a counter at a fixed
// rate, then prints how many events it recorded and how many its ring
// dropped, so a test can prove the host kept draining under a scrape flood.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/tapes-go/tapes/shm"
)

func main() {
	histograms := flag.Int("histograms", 0, "histograms to create (name PREFIX.h<i>), each fed 64 values (again if the ring dropped some)")
	prefix := flag.String("prefix", "load", "metric name prefix")
	rate := flag.Int("rate", 0, "counter events per second to record into PREFIX.ticks")
	duration := flag.Duration("duration", 0, "how long to record at -rate")
	flag.Parse()

	c, err := shm.OpenEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rateworker:", err)
		os.Exit(1)
	}
	for i := 0; i < *histograms; i++ {
		h := c.Histogram(fmt.Sprintf("%s.h%d", *prefix, i))
		before := c.Dropped()
		// Values over a few octaves, so every histogram has some buckets.
		for j := range 64 {
			h.Update(float64(int64(1)<<(j%8)) * (1 + float64(i%7)/10))
		}
		if c.Dropped() != before {
			// The host fell behind (a loaded machine): wait and record
			// this histogram again, so that every one ends with at least
			// 64 values.
			time.Sleep(10 * time.Millisecond)
			i--
			continue
		}
		if i%4 == 3 {
			// ~256 events per millisecond, each batch naming new
			// metrics: well within what the host drains and binds.
			time.Sleep(time.Millisecond)
		}
	}
	c.Flush()

	var recorded int64
	if *rate > 0 && *duration > 0 {
		ticks := c.Counter(*prefix + ".ticks")
		start := time.Now()
		for {
			el := time.Since(start)
			if el > *duration {
				el = *duration
			}
			// Catch up to the rate: a late wake-up records a burst, as a
			// busy service would.
			for target := int64(el.Seconds() * float64(*rate)); recorded < target; recorded++ {
				ticks.Inc()
			}
			if el == *duration {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	c.Flush()
	fmt.Printf("recorded %d dropped %d\n", recorded, c.Dropped())
	if err := c.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "rateworker: close:", err)
		os.Exit(1)
	}
}
