//go:build linux

package tests

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHostPush measures what pushing costs the rest of the host: the
// latency of a /metrics scrape (each one a render, -http-cache 0) and the
// host's CPU time per second, with 1000 histograms in the registry and
// remote write + OTLP reporting every 50ms (to magnify what pushing costs)
// or every 1s, to receivers that are absent (none), alive (live: answers
// 204), hung (accept, never answer) or down (connection refused). Compare
// with benchstat:
//
//	go test -run '^$' -bench BenchmarkHostPush -benchtime 100x -count 5 ./tests | tee push.txt
//	benchstat -col /receiver push.txt
func BenchmarkHostPush(b *testing.B) {
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer live.Close()
	hung := benchHung(b)
	down := benchDown(b)
	for _, interval := range []string{"50ms", "1s"} {
		for _, rc := range []struct{ name, url string }{{"none", ""}, {"live", live.URL}, {"hung", hung}, {"down", down}} {
			b.Run("interval="+interval+"/receiver="+rc.name, func(b *testing.B) { benchHostPush(b, interval, rc.url) })
		}
	}
}

func benchHostPush(b *testing.B, interval, url string) {
	args := []string{"-shm", filepath.Join(b.TempDir(), "t.shm"), "-http", "127.0.0.1:0", "-http-cache", "0", "-interval", interval}
	if url != "" {
		args = append(args, "-remote-write-url", url+"/api/v1/write", "-otlp-url", url+"/v1/metrics", "-push-timeout", "1h")
	}
	cmd, addr, shmPath := benchHost(b, args...)
	w := exec.Command(rateworkerBin(b), "-histograms", "1000")
	w.Env = append(os.Environ(), "TAPES_SHM="+shmPath)
	if out, err := w.CombinedOutput(); err != nil {
		b.Fatalf("rateworker: %v %s", err, out)
	}
	cl := &http.Client{Timeout: 30 * time.Second}
	scrape := func() {
		resp, err := cl.Get("http://" + addr + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for range 5 {
		scrape() // warm up, and let the pushers fill their queues
	}
	time.Sleep(500 * time.Millisecond)
	cpu0, t0 := cpuTime(b, cmd.Process.Pid), time.Now()
	b.ResetTimer()
	for b.Loop() {
		scrape()
	}
	b.StopTimer()
	// The CPU rate covers the scrapes and a second without them, so
	// that pushing shows even when scrapes are fast.
	time.Sleep(time.Second)
	cpu := cpuTime(b, cmd.Process.Pid) - cpu0
	b.ReportMetric(float64(cpu.Milliseconds())/time.Since(t0).Seconds(), "host-cpu-ms/s")
}

// cpuTime is a process's user+system time (/proc/PID/stat fields 14, 15).
func cpuTime(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func benchHost(b *testing.B, args ...string) (*exec.Cmd, string, string) {
	cmd := exec.Command(hostBin(b), args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	var addr, shmPath string
	for (addr == "" || shmPath == "") && sc.Scan() {
		if m := metricsLine.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
		if m := shmLine.FindStringSubmatch(sc.Text()); m != nil {
			shmPath = m[1]
		}
	}
	if addr == "" || shmPath == "" {
		b.Fatal("tapes-host did not start")
	}
	go io.Copy(io.Discard, out)
	return cmd, addr, shmPath
}

func benchHung(b *testing.B) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice the client leaving
		// (its context ends), so that Close does not wait forever.
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	b.Cleanup(srv.Close)
	b.Cleanup(srv.CloseClientConnections) // runs first: unblocks the handlers Close waits for
	return srv.URL
}

func benchDown(b *testing.B) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	return url
}
