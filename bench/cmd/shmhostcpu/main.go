// Command shmhostcpu measures what tapes-host costs in CPU while its
// workers are idle or trickle events, side by side for two builds (say the
// host and test worker built from main, and from this tree), alternating
// the builds round by round so that the load of a shared machine falls on
// both alike. Each run starts `tapes-host -shm FILE -slots N -http ""` and
// K `testworker -hold -n 0` processes (one counter event every 10 ms each),
// lets them settle, and reads the host's CPU time over -measure from
// /proc/PID/task/*/schedstat (nanoseconds; /proc/PID/stat's utime and
// stime count 10 ms ticks, too coarse for 0.1% over 5 s). It prints one
// line per scenario and build: the median and the range over the rounds.
//
//	go build -o /tmp/new/ ./cmd/tapes-host ./tests/testworker     # in each tree
//	shmhostcpu -build old=/tmp/old -build new=/tmp/new -rounds 5 \
//	    -scenarios 0x64,0x1024,1x64,1x1024,200x256
//
// A scenario KxN is K workers on a file of N slots; KxN@R has each worker
// record R events a second instead of 100 (above 1,000 in bursts every
// millisecond: testworker -rate).
//
// With -floor a third column, "go-floor", measures what no host built in Go
// can go below on the same machine: the same workers run against a host
// stopped with SIGSTOP, and in its place a Go process that does nothing
// but be woken through the netpoller (a pipe read with a raw read(2), the
// cheapest way we know for a goroutine to sleep and wake) as often as the
// host must wake: once per event for one worker (100/s), once per
// coalescing window (-window, tapes-host's default 1.5ms) beyond, never for
// none.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// live is every process this command started and has not waited for, so
// that an interrupt (SIGINT, SIGTERM) ends them too instead of leaving 200
// workers behind.
var (
	liveMu sync.Mutex
	live   = map[*exec.Cmd]bool{}
)

func started(c *exec.Cmd) {
	liveMu.Lock()
	live[c] = true
	liveMu.Unlock()
}

func ended(c *exec.Cmd) {
	liveMu.Lock()
	delete(live, c)
	liveMu.Unlock()
}

type build struct{ name, dir string }

type builds []build

func (b *builds) String() string { return fmt.Sprint(*b) }
func (b *builds) Set(s string) error {
	name, dir, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("-build wants NAME=DIR, got %q", s)
	}
	*b = append(*b, build{name, dir})
	return nil
}

func main() {
	var bs builds
	flag.Var(&bs, "build", "NAME=DIR holding tapes-host and testworker (repeat)")
	scen := flag.String("scenarios", "0x64,0x1024,1x64,1x1024,200x256", "comma-separated KxN or KxN@R: K workers, N slots, R events/s per worker (default 100)")
	rounds := flag.Int("rounds", 5, "rounds; builds alternate their order every round")
	measure := flag.Duration("measure", 5*time.Second, "how long to measure the host's CPU")
	settle := flag.Duration("settle", time.Second, "wait after the workers started before measuring")
	floor := flag.Bool("floor", false, "also measure a Go process that is only woken, as often as the host (column go-floor)")
	flag.DurationVar(&floorWindow, "window", 1500*time.Microsecond, "the hosts' coalescing window, which sets how often the go-floor process is woken with more than one worker")
	flag.Parse()
	if os.Getenv(floorEnv) != "" {
		floorWaiter()
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		liveMu.Lock()
		for c := range live {
			c.Process.Kill()
		}
		os.Exit(130)
	}()
	if len(bs) == 0 {
		fmt.Fprintln(os.Stderr, "shmhostcpu: give at least one -build")
		os.Exit(2)
	}
	if *floor {
		bs = append(bs, build{floorName, bs[0].dir})
	}
	type key struct{ scen, build string }
	res := map[key][]float64{}
	scens := strings.Split(*scen, ",")
	for r := 0; r < *rounds; r++ {
		for _, sc := range scens {
			k, n, rate, err := parseScenario(sc)
			if err != nil {
				fmt.Fprintf(os.Stderr, "shmhostcpu: scenario %q: %v\n", sc, err)
				os.Exit(2)
			}
			order := slices.Clone(bs)
			if r%2 == 1 {
				slices.Reverse(order)
			}
			for _, b := range order {
				pct, err := run(b, k, n, rate, *settle, *measure)
				if err != nil {
					fmt.Fprintf(os.Stderr, "shmhostcpu: %s %s: %v\n", sc, b.name, err)
					os.Exit(1)
				}
				fmt.Fprintf(os.Stderr, "round %d %s %s: %.3f%%\n", r, sc, b.name, pct)
				res[key{sc, b.name}] = append(res[key{sc, b.name}], pct)
			}
		}
	}
	fmt.Printf("%-10s", "workers x slots")
	for _, b := range bs {
		fmt.Printf(" | %-26s", b.name+" cpu-% median [range]")
	}
	fmt.Println()
	for _, sc := range scens {
		fmt.Printf("%-15s", sc)
		for _, b := range bs {
			v := slices.Sorted(slices.Values(res[key{sc, b.name}]))
			fmt.Printf(" | %6.3f [%.3f-%.3f]        ", v[len(v)/2], v[0], v[len(v)-1])
		}
		fmt.Println()
	}
}

// parseScenario reads KxN or KxN@R.
func parseScenario(sc string) (k, n, rate int, err error) {
	rate = 100
	kn, r, rated := strings.Cut(sc, "@")
	if rated {
		if rate, err = strconv.Atoi(r); err != nil || rate < 1 {
			return 0, 0, 0, fmt.Errorf("rate %q: want events a second, at least 1", r)
		}
	}
	if _, err := fmt.Sscanf(kn, "%dx%d", &k, &n); err != nil {
		return 0, 0, 0, err
	}
	return k, n, rate, nil
}

func run(b build, k, n, rate int, settle, measure time.Duration) (float64, error) {
	dir, err := os.MkdirTemp("/dev/shm", "shmhostcpu-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o700)
	path := filepath.Join(dir, "m.shm")
	host := exec.Command(filepath.Join(b.dir, "tapes-host"), "-shm", path, "-slots", strconv.Itoa(n), "-http", "")
	host.Stderr = os.Stderr
	if err := host.Start(); err != nil {
		return 0, err
	}
	started(host)
	defer ended(host)
	defer func() {
		host.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { host.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			host.Process.Kill()
			<-done
		}
	}()
	for t0 := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Since(t0) > 10*time.Second {
			return 0, fmt.Errorf("the host created no file")
		}
	}
	var ws []*exec.Cmd
	defer func() {
		for _, w := range ws {
			w.Process.Signal(syscall.SIGTERM)
		}
		for _, w := range ws {
			w.Wait()
			ended(w)
		}
	}()
	for i := 0; i < k; i++ {
		args := []string{"-hold", "-n", "0", "-prefix", fmt.Sprintf("w%d", i)}
		if rate != 100 {
			args = append(args, "-rate", strconv.Itoa(rate)) // a build from before -rate records 100/s
		}
		w := exec.Command(filepath.Join(b.dir, "testworker"), args...)
		w.Env = append(os.Environ(), "TAPES_SHM="+path)
		out, err := w.StdoutPipe()
		if err != nil {
			return 0, err
		}
		w.Stderr = os.Stderr
		if err := w.Start(); err != nil {
			return 0, err
		}
		started(w)
		ws = append(ws, w)
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "recorded") {
			return 0, fmt.Errorf("worker %d said %q (%v)", i, line, err)
		}
	}
	pid := host.Process.Pid
	if b.name == floorName {
		// SIGCONT before the SIGTERM deferred above, which a stopped host
		// would not act on.
		host.Process.Signal(syscall.SIGSTOP)
		defer host.Process.Signal(syscall.SIGCONT)
		if pid, err = startFloor(k*rate, floorWindow); err != nil {
			return 0, err
		}
		defer stopFloor()
	}
	time.Sleep(settle)
	c0, t0 := cpu(pid), time.Now()
	time.Sleep(measure)
	c1, t1 := cpu(pid), time.Now()
	return 100 * float64(c1-c0) / float64(t1.Sub(t0)), nil
}

// cpu sums the run time of every thread of pid, in nanoseconds (the first
// field of each /proc/PID/task/TID/schedstat).
func cpu(pid int) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			sum += v
		}
	}
	return sum
}
