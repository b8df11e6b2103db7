package host

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
	"github.com/tapes-go/tapes/shm"
)

func init() {
	roles["loop"] = roleLoop
	roles["phased"] = rolePhased
	roles["host-crash"] = roleHostCrash
	roles["burst"] = roleBurst
	roles["steady"] = roleSteady
	roles["host-loop"] = roleHostLoop
}

// roleSteady records counter events at a moderate pace until stdin closes,
// then closes its client and prints "sent N dropped D".
func roleSteady() int {
	c, err := OpenEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctr := c.Counter("steady.n")
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stop) }()
	fmt.Println("ready")
	sent := 0
	for {
		select {
		case <-stop:
			d := c.Dropped()
			c.Close()
			fmt.Printf("sent %d dropped %d\n", sent, d)
			return 0
		default:
		}
		for j := 0; j < 100; j++ {
			ctr.Inc()
		}
		sent += 100
		time.Sleep(200 * time.Microsecond)
	}
}

// roleHostLoop drains with Drain until killed, reporting on stdout each
// batch it is about to release ("pre N") and each it has consumed ("taken
// N"): a batch announced but not confirmed when the process is killed may
// or may not have been consumed; everything else is known exactly.
func roleHostLoop() int {
	var h *Host
	var err error
	for try := 0; try < 100; try++ {
		if h, err = Create(os.Getenv(shm.EnvVar), Config{}); !errors.Is(err, ErrLocked) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	say := func(s string) func(int, uint64) {
		return func(slot int, n uint64) {
			os.Stdout.WriteString(s + strconv.Itoa(slot) + " " + strconv.FormatUint(n, 10) + "\n")
		}
	}
	testHookBeforeRelease, testHookMidRelease = say("pre "), say("taken ")
	fmt.Println("ready")
	h.Drain(context.Background())
	return 1
}

// TestHostKilledDuringLoad kills a real host process with SIGKILL at random
// moments while workers record, starting a new host each time; at the end
// every committed event has been consumed exactly once by some host, up to
// the one batch each killed host had announced but not confirmed.
func TestHostKilledDuringLoad(t *testing.T) {
	const workers, kills = 2, 3
	path := tempPath(t)
	h0, err := Create(path, Config{Slots: 4, RingRecords: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	h0.Close()
	type wk struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out *bufio.Reader
	}
	var ws []wk
	for k := 0; k < workers; k++ {
		cmd := child(t, "steady", shm.EnvVar+"="+path)
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		w := wk{cmd, in, bufio.NewReader(out)}
		expectLine(t, w.out, "ready")
		ws = append(ws, w)
	}
	var taken, slack uint64
	for i := 0; i < kills; i++ {
		hc := child(t, "host-loop", shm.EnvVar+"="+path)
		out, _ := hc.StdoutPipe()
		if err := hc.Start(); err != nil {
			t.Fatal(err)
		}
		rd := bufio.NewReader(out)
		expectLine(t, rd, "ready")
		time.Sleep(time.Duration(30+rand.IntN(70)) * time.Millisecond)
		hc.Process.Signal(syscall.SIGKILL)
		pending := map[string]uint64{} // by slot: slots drain concurrently
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				break
			}
			f := strings.Fields(line)
			n, _ := strconv.ParseUint(f[2], 10, 64)
			switch f[0] {
			case "pre":
				pending[f[1]] = n
			case "taken":
				// A "taken" with no "pre" before it is a new host
				// finishing the release a killed host had already
				// confirmed (recover): those records were counted then.
				if pending[f[1]] == n {
					taken += n
				}
				delete(pending, f[1])
			}
		}
		hc.Wait()
		for _, n := range pending {
			slack += n
		}
		time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond) // no host at all for a while
	}
	var committed uint64
	for _, w := range ws {
		w.in.Close()
		line, err := w.out.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		var sent, dropped uint64
		fmt.Sscanf(line, "sent %d dropped %d", &sent, &dropped)
		committed += sent - dropped
		w.cmd.Wait()
	}
	h, err := Create(path, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r := h.Registry()
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	final := uint64(r.Counter("steady.n").Value())
	t.Logf("committed %d: killed hosts consumed %d (+ up to %d in flight), the last host %d", committed, taken, slack, final)
	if taken+final > committed || taken+final+slack < committed {
		t.Errorf("committed %d, consumed %d + %d (slack %d): events lost or applied twice", committed, taken, final, slack)
	}
	if taken == 0 {
		t.Errorf("the killed hosts consumed nothing: the test did not exercise them")
	}
	if v := r.Counter("tapes.shm.malformed").Value(); v != 0 {
		t.Errorf("malformed = %d", v)
	}
}

// roleLoop records until killed. Every batch it prints how many events are
// committed (recorded minus dropped): the host must end up with at least
// that many and at most one batch more.
func roleLoop() int {
	c, err := OpenEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	name := os.Getenv("LOOP_NAME")
	cnt := c.Counter(name + ".n")
	hst := c.Histogram(name + ".v")
	tmr := c.Timer(name + ".t")
	const batch = 64
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "0 0\n") // attached
	w.Flush()
	for sent := uint64(0); ; {
		for j := 0; j < batch; j++ {
			cnt.Inc()
			hst.Update(42.5)
			tmr.Update(7 * time.Microsecond)
		}
		sent += batch
		// Each event is three records; a dropped record may be any of them,
		// so the confirmed count is what the counter can be sure of.
		fmt.Fprintf(w, "%d %d\n", sent, c.Dropped())
		w.Flush()
	}
}

type progress struct {
	mu            sync.Mutex
	sent, dropped uint64
	done, ready   chan struct{}
}

func readProgress(r io.Reader, p *progress) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	for first := true; sc.Scan(); first = false {
		if first {
			close(p.ready)
		}
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		s, _ := strconv.ParseUint(f[0], 10, 64)
		d, _ := strconv.ParseUint(f[1], 10, 64)
		p.mu.Lock()
		p.sent, p.dropped = s, d
		p.mu.Unlock()
	}
}

// TestWorkersKilled kills workers with SIGKILL at random moments while they
// record and a host drains; more workers are started than there are slots,
// so the test also proves that dead workers' slots are reclaimed.
func TestWorkersKilled(t *testing.T) {
	const slots, rounds = 3, 3
	h := newHost(t, Config{Slots: slots, RingRecords: 1 << 12})
	r := h.Registry()
	ctx, cancel := context.WithCancel(context.Background())
	drainDone := make(chan error, 1)
	go func() { drainDone <- testDrain(h, ctx, WithLivenessInterval(20*time.Millisecond)) }()

	type worker struct {
		name string
		p    *progress
	}
	var all []worker
	for round := 0; round < rounds; round++ {
		var cmds []*exec_
		for k := 0; k < slots; k++ {
			name := fmt.Sprintf("kill.r%dw%d", round, k)
			cmd := child(t, "loop", shm.EnvVar+"="+h.Path(), "LOOP_NAME="+name)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			p := &progress{done: make(chan struct{}), ready: make(chan struct{})}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go readProgress(out, p)
			cmds = append(cmds, &exec_{cmd, p})
			all = append(all, worker{name, p})
		}
		for _, c := range cmds {
			select {
			case <-c.p.ready:
			case <-c.p.done:
				t.Fatal("a worker exited before attaching")
			}
		}
		time.Sleep(time.Duration(20+rand.IntN(80)) * time.Millisecond)
		for _, c := range cmds {
			time.Sleep(time.Duration(rand.IntN(10)) * time.Millisecond)
			c.cmd.Process.Signal(syscall.SIGKILL)
		}
		for _, c := range cmds {
			<-c.p.done
			c.cmd.Wait()
		}
		// The next round needs the slots back.
		waitFor(t, "slots reclaimed", 10*time.Second, func() bool {
			select {
			case err := <-drainDone:
				t.Fatalf("Drain returned %v", err)
			default:
			}
			return r.Counter("tapes.shm.reclaimed").Value() >= int64((round+1)*slots)
		})
	}
	cancel()
	if err := <-drainDone; err != nil {
		t.Fatal(err)
	}
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	for _, w := range all {
		w.p.mu.Lock()
		sent, dropped := w.p.sent, w.p.dropped
		w.p.mu.Unlock()
		got := uint64(0)
		if m, ok := r.Get(w.name + ".n"); ok {
			got = uint64(m.(*registry.Counter).Value())
		}
		// At least what was confirmed minus every dropped record; at most
		// what was confirmed plus the batch in progress.
		lo := int64(sent) - int64(dropped)
		if int64(got) < lo || got > sent+64 {
			t.Errorf("%s: host has %d, worker confirmed %d sent with %d records dropped", w.name, got, sent, dropped)
		}
		if m, ok := r.Get(w.name + ".v"); ok {
			s := m.(*registry.Histogram).Snapshot()
			if s.Count > 0 && (s.Min != 42.5 || s.Max != 42.5) {
				t.Errorf("%s: torn histogram value: min %v max %v", w.name, s.Min, s.Max)
			}
		}
		if m, ok := r.Get(w.name + ".t"); ok {
			s := m.(*registry.Timer).Snapshot()
			want := (7 * time.Microsecond).Seconds()
			if s.Count > 0 && (s.Min != want || s.Max != want) {
				t.Errorf("%s: torn timer value: min %v max %v", w.name, s.Min, s.Max)
			}
		}
	}
	if v := r.Counter("tapes.shm.malformed").Value(); v != 0 {
		t.Errorf("malformed = %d", v)
	}
	if v := r.Counter("tapes.shm.reclaimed").Value(); v != slots*rounds {
		t.Errorf("reclaimed = %d, want %d", v, slots*rounds)
	}
	rep, err := shm.Inspect(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Workers) != 0 {
		t.Errorf("slots still held: %+v", rep.Workers)
	}
	t.Logf("events %d, aborted %d, dropped %d", r.Counter("tapes.shm.drained").Value(),
		r.Counter("tapes.shm.aborted").Value(), r.Counter("tapes.shm.dropped.all").Value())
}

// rolePhased records PHASE_N counter events, says so, waits for a line on
// stdin, records PHASE_N more, says so, waits again and closes.
func rolePhased() int {
	c, err := OpenEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	n := envInt("PHASE_N")
	in := bufio.NewReader(os.Stdin)
	ctr := c.Counter("phased.n")
	for phase := 1; phase <= 2; phase++ {
		for j := 0; j < n; j++ {
			ctr.Inc()
		}
		fmt.Printf("phase%d %d\n", phase, c.Dropped())
		if _, err := in.ReadString('\n'); err != nil {
			return 1
		}
	}
	c.Close()
	return 0
}

// roleHostCrash attaches as the host and drains; after releasing one
// chunk, between applying the second and releasing it (or in the middle
// of releasing it), it prints the counter it applied to and kills itself
// with SIGKILL.
func roleHostCrash() int {
	h, err := Create(os.Getenv(shm.EnvVar), Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r := h.Registry()
	chunks := 0
	crash := func(int, uint64) {
		if chunks++; chunks < 2 {
			return
		}
		v := int64(0)
		if m, ok := r.Get("phased.n"); ok {
			v = m.(*registry.Counter).Value()
		}
		fmt.Printf("applied %d\n", v)
		os.Stdout.Sync()
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	if os.Getenv("CRASH_AT") == "before" {
		testHookBeforeRelease = crash
	} else {
		testHookMidRelease = crash
	}
	for {
		if _, err := h.DrainOnce(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHostKilledMidBatch kills a host process after it applied records but
// before or while it released them, while a worker keeps recording with no
// host running. Records are consumed when their release begins (the taking
// index is stored): a host killed before that leaves them to the next host,
// one killed after it leaves them consumed even if it had not zeroed them.
// Either way the next host applies every record not consumed, once. The
// first phase is more than two release chunks, and the host dies holding
// the second, after it released the first.
func TestHostKilledMidBatch(t *testing.T) {
	t.Run("before", func(t *testing.T) { testHostKilled(t, "before") })
	t.Run("during", func(t *testing.T) { testHostKilled(t, "during") })
}

func testHostKilled(t *testing.T, at string) {
	const n = 2*releaseEvery + 904
	path := tempPath(t)
	h0, err := Create(path, Config{Slots: 2, RingRecords: 1 << 15})
	if err != nil {
		t.Fatal(err)
	}
	h0.Close()

	w := child(t, "phased", shm.EnvVar+"="+path, "PHASE_N="+strconv.Itoa(n))
	win, _ := w.StdinPipe()
	wout, _ := w.StdoutPipe()
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Process.Kill()
	wr := bufio.NewReader(wout)
	expectLine(t, wr, "phase1 0")

	hc := child(t, "host-crash", shm.EnvVar+"="+path, "CRASH_AT="+at)
	hout, _ := hc.StdoutPipe()
	if err := hc.Start(); err != nil {
		t.Fatal(err)
	}
	expectLine(t, bufio.NewReader(hout), fmt.Sprintf("applied %d", 2*releaseEvery))
	want := int64(2*n - releaseEvery) // the first chunk was consumed
	if at == "during" {
		want -= releaseEvery // and so is the chunk it was releasing
	}
	if err := hc.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("crashing host: %v", err)
	}

	// No host runs now; the worker records its second phase into the ring.
	io.WriteString(win, "go\n")
	expectLine(t, wr, "phase2 0")

	h, err := Create(path, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r := h.Registry()
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if got := r.Counter("phased.n").Value(); got != want {
		t.Errorf("second host applied %d, want exactly %d", got, want)
	}
	io.WriteString(win, "bye\n")
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.DrainOnce(); err != nil {
		t.Fatal(err)
	}
	if v := r.Counter("tapes.shm.malformed").Value(); v != 0 {
		t.Errorf("malformed = %d", v)
	}
	if v := r.Counter("tapes.shm.reclaimed").Value(); v != 1 {
		t.Errorf("reclaimed = %d", v)
	}
}

func expectLine(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != want {
		t.Fatalf("read %q (%v), want %q", line, err, want)
	}
}

// roleBurst records BURST_N counter events as fast as it can and exits.
func roleBurst() int {
	c, err := OpenEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctr := c.Counter("burst.n")
	n := envInt("BURST_N")
	for j := 0; j < n; j++ {
		ctr.Inc()
	}
	fmt.Printf("%d\n", c.Dropped())
	c.Close()
	return 0
}

// TestOverflow gives workers a 16-record ring and a host that cannot keep
// up: every event is either applied or counted as dropped, exactly.
func TestOverflow(t *testing.T) {
	const workers, n = 2, 200000
	h := newHost(t, Config{Slots: 4, RingRecords: 16})
	r := h.Registry()
	ctx, cancel := context.WithCancel(context.Background())
	drainDone := make(chan error, 1)
	go func() { drainDone <- h.Drain(ctx) }()
	var wg sync.WaitGroup
	var workerDropped [workers]uint64
	for k := 0; k < workers; k++ {
		cmd := child(t, "burst", shm.EnvVar+"="+h.Path(), "BURST_N="+strconv.Itoa(n))
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := cmd.Output()
			if err != nil {
				t.Error(err)
			}
			workerDropped[k], _ = strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
		}()
	}
	wg.Wait()
	waitFor(t, "slots reclaimed", 10*time.Second, func() bool {
		return r.Counter("tapes.shm.reclaimed").Value() == workers
	})
	cancel()
	if err := <-drainDone; err != nil {
		t.Fatal(err)
	}
	applied := r.Counter("burst.n").Value()
	dropped := r.Counter("tapes.shm.dropped.all").Value()
	if applied+dropped != workers*n {
		t.Errorf("applied %d + dropped %d = %d, want %d", applied, dropped, applied+dropped, workers*n)
	}
	if want := int64(workerDropped[0] + workerDropped[1]); dropped != want {
		t.Errorf("host counted %d dropped, workers reported %d", dropped, want)
	}
	if dropped == 0 {
		t.Errorf("no event dropped: the test did not overflow the ring")
	}
	t.Logf("applied %d dropped %d", applied, dropped)
}

type exec_ struct {
	cmd *exec.Cmd
	p   *progress
}
