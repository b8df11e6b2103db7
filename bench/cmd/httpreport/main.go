// Command httpreport turns the rounds of the HTTP benchmarks (the output of
// `go test -bench 'BenchmarkHTTP'` per round, and the per-request latency
// files the benchmarks write when TAPES_HTTP_BENCH_OUT is set) into
// bench/results/REPORT.md and box plots rendered by gnuplot. It is run by
// bench/scripts/run.sh.
//
//	httpreport -in DIR -out ../results -command "bench/scripts/run.sh"
//
// DIR holds round-N.txt (go test output) and lat/*.lat (one latency in ns
// per line, written by the benchmarks).
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// modes are the two benchmarks, their variants in table order, and the
// baseline each ratio is taken against.
var modes = []mode{
	{"Single", "BenchmarkHTTPSingle", "single process", []string{"none", "tapes", "gometrics", "prometheus"}},
	{"Workers", "BenchmarkHTTPWorkers", "2 worker processes sharing a port (SO_REUSEPORT)", []string{"none", "tapes", "statsd", "zmq"}},
}

type mode struct {
	key, bench, title string
	variants          []string
}

var describe = map[string]string{
	"Single/none":       "no metrics",
	"Single/tapes":      "tapes registry timer per route",
	"Single/gometrics":  "rcrowley/go-metrics Timer per route",
	"Single/prometheus": "client_golang HistogramVec (DefBuckets), one child per route",
	"Workers/none":      "no metrics",
	"Workers/tapes":     "shm client in each worker, tapes-host draining",
	"Workers/statsd":    "go-statsd-client, one UDP packet per request to a sink",
	"Workers/zmq":       "zmq4 PUB per worker, SUB aggregator into a registry",
}

// result is one variant in one round.
type result struct {
	rps, vsNone, cpu, backCPU, idle, lost float64
	hasLost, hasBack                      bool
}

func main() {
	in := flag.String("in", "", "directory with round-N.txt and lat/")
	out := flag.String("out", "results", "where REPORT.md and the PNGs go")
	command := flag.String("command", "bench/scripts/run.sh", "the command that produced the data, for the report")
	doc := flag.String("doc", "", "also replace the text between the markers "+docStart+" and "+docEnd+" of this Markdown file with the tables")
	flag.Parse()
	if *in == "" {
		fmt.Fprintln(os.Stderr, "httpreport: -in is required")
		os.Exit(2)
	}
	if err := run(*in, *out, *command, *doc); err != nil {
		fmt.Fprintln(os.Stderr, "httpreport:", err)
		os.Exit(1)
	}
}

var origLine = regexp.MustCompile(`^BenchmarkOriginal/lib=(\w+)(?:-\d+)?\s+\d+\s+([\d.e+]+) ns/op`)

var benchLine = regexp.MustCompile(`^(BenchmarkHTTP\w+?)(?:-\d+)?\s+(\d+)\s+(.*)$`)

const (
	docStart = "<!-- httpreport:start -->"
	docEnd   = "<!-- httpreport:end -->"
)

func run(in, out, command, doc string) error {
	rounds, err := filepath.Glob(filepath.Join(in, "round-*.txt"))
	if err != nil || len(rounds) == 0 {
		return fmt.Errorf("no round-*.txt in %s", in)
	}
	sort.Slice(rounds, func(i, j int) bool { return roundNum(rounds[i]) < roundNum(rounds[j]) })
	// data[mode/variant][round] = result
	data := map[string]map[int]result{}
	orig := map[string][]float64{} // library -> ns per 200,000 timed blocks, per round
	var header []string
	for _, f := range rounds {
		r := roundNum(f)
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if strings.HasPrefix(line, "cpu:") || strings.HasPrefix(line, "goos:") || strings.HasPrefix(line, "goarch:") {
				if !slices.Contains(header, line) {
					header = append(header, line)
				}
			}
			if m := origLine.FindStringSubmatch(line); m != nil {
				if ns, err := strconv.ParseFloat(m[2], 64); err == nil {
					orig[m[1]] = append(orig[m[1]], ns)
				}
				continue
			}
			m := benchLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			// Metrics are named VARIANT-METRIC: "tapes-req/s".
			f := strings.Fields(m[3])
			for i := 0; i+1 < len(f); i += 2 {
				val, err := strconv.ParseFloat(f[i], 64)
				if err != nil {
					continue
				}
				variant, metric, ok := strings.Cut(f[i+1], "-")
				if !ok {
					continue
				}
				key := strings.TrimPrefix(m[1], "BenchmarkHTTP") + "/" + variant
				if data[key] == nil {
					data[key] = map[int]result{}
				}
				res := data[key][r]
				switch metric {
				case "req/s":
					res.rps = val
				case "vs-none-%":
					res.vsNone = val
				case "cpu-us/req":
					res.cpu = val
				case "idle-cpu-%":
					res.idle = val
				case "backend-cpu-us/req":
					res.backCPU, res.hasBack = val, true
				case "lost-%":
					res.lost, res.hasLost = val, true
				}
				data[key][r] = res
			}
		}
	}
	if len(data) == 0 {
		return errors.New("no BenchmarkHTTP results in the round files")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var md bytes.Buffer
	fmt.Fprintf(&md, "# HTTP benchmarks: tapes against no metrics and the alternatives\n\n")
	fmt.Fprintf(&md, "Generated %s by `%s` (bench/cmd/httpreport). Do not edit by hand.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), command)
	fmt.Fprintf(&md, "## Machine\n\n%s\n", machine(header))
	fmt.Fprintf(&md, "## Method\n\n")
	fmt.Fprintf(&md, "Each benchmark starts every variant's processes at once, warms each with 1,000 requests, then\n"+
		"sends each variant 30,000 keep-alive `GET /` requests at concurrency 10 from the Go load generator in\n"+
		"`bench/httpload.go`, against a handler writing `finished`. The requests go in chunks of 1,000, the\n"+
		"variants taking turns in an order that rotates every cycle, so that bursts of noise on this shared\n"+
		"machine land on every variant alike. %d rounds here (one `go test -bench` run each).\n\n"+
		"- **req/s**: requests / time spent in the variant's own chunks; median over rounds.\n"+
		"- **vs none**: per cycle, the variant's chunk throughput over the no-metrics chunk of the same cycle;\n"+
		"  median over cycles, then over rounds; in brackets the interquartile range over rounds. CPU/req's\n"+
		"  vs none is the same per-round ratio of CPU per request.\n"+
		"- **CPU/req**: CPU time of the variant's server-side processes (server or workers, plus tapes-host,\n"+
		"  the StatsD sink or the ZeroMQ aggregator, shown apart as *backend*) during its own chunks and until\n"+
		"  its backend had counted each chunk, per request, from /proc/PID/task/*/schedstat; median over rounds.\n"+
		"- **idle CPU**: share of one core the same processes used during one idle second before the run.\n"+
		"- Latencies pool every request of every round. **lost**: share of requests the metrics backend never\n"+
		"  counted (worst round).\n\n", len(rounds))
	tablesAt := md.Len()
	for _, m := range modes {
		if err := writeMode(&md, m, data, rounds, in, out); err != nil {
			return err
		}
	}
	writeOriginal(&md, orig)
	if err := os.WriteFile(filepath.Join(out, "REPORT.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	if doc == "" {
		return nil
	}
	absDoc, err := filepath.Abs(doc)
	if err != nil {
		return err
	}
	absOut, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(absDoc), absOut)
	if err != nil {
		return err
	}
	// In the doc, the headings sit one level down and the images point
	// into the results directory.
	tables := strings.ReplaceAll(string(md.Bytes()[tablesAt:]), "\n## ", "\n### ")
	tables = strings.TrimPrefix(tables, "## ")
	tables = regexp.MustCompile(`\]\((http-\w+\.png)\)`).ReplaceAllString(tables, "]("+filepath.ToSlash(rel)+"/$1)")
	return replaceBetween(doc, fmt.Sprintf("Measured %s with `%s`; %d rounds; machine: %s.\n\n### %s",
		time.Now().UTC().Format("2006-01-02"), command, len(rounds), oneLineMachine(header), tables))
}

// replaceBetween replaces what lies between docStart and docEnd in the
// file at path.
func replaceBetween(path, text string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, docStart), strings.Index(s, docEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %s ... %s markers", path, docStart, docEnd)
	}
	s = s[:i+len(docStart)] + "\n" + text + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

func oneLineMachine(header []string) string {
	cpu := "unknown CPU"
	for _, h := range header {
		if c, ok := strings.CutPrefix(h, "cpu:"); ok {
			cpu = strings.TrimSpace(c)
		}
	}
	return fmt.Sprintf("%s, %d logical CPUs, %s, %s", cpu, runtime.NumCPU(), memTotal(), runtime.Version())
}

func roundNum(path string) int {
	s := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "round-"), ".txt")
	n, _ := strconv.Atoi(s)
	return n
}

func machine(header []string) string {
	var b strings.Builder
	for _, h := range header {
		fmt.Fprintf(&b, "- %s\n", strings.TrimSpace(h))
	}
	fmt.Fprintf(&b, "- %d logical CPUs, %s, %s\n", runtime.NumCPU(), memTotal(), runtime.Version())
	if out, err := exec.Command("uname", "-srm").Output(); err == nil {
		fmt.Fprintf(&b, "- kernel: %s\n", strings.TrimSpace(string(out)))
	}
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(load))
		if len(f) >= 3 {
			fmt.Fprintf(&b, "- load average when the report was written: %s %s %s (the machine is shared; other jobs ran during the rounds)\n", f[0], f[1], f[2])
		}
	}
	return b.String()
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "memory unknown"
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return fmt.Sprintf("%.0f GiB RAM", kb/(1<<20))
		}
	}
	return "memory unknown"
}

// writeMode writes one table and its box plots.
func writeMode(md *bytes.Buffer, m mode, data map[string]map[int]result, rounds []string, in, out string) error {
	base := data[m.key+"/none"]
	fmt.Fprintf(md, "## %s\n\n", strings.ToUpper(m.title[:1])+m.title[1:])
	fmt.Fprintf(md, "| variant | what | req/s | vs none | CPU/req (µs) | vs none | idle CPU | p50 (µs) | p90 (µs) | p99 (µs) | max (ms) | lost |\n")
	fmt.Fprintf(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	type plotRow struct {
		name string
		lat  []float64 // p1 p25 p50 p75 p99 in µs
		rps  []float64 // p5 p25 p50 p75 p95 of per-chunk req/s
	}
	var rows []plotRow
	for _, v := range m.variants {
		key := m.key + "/" + v
		rs := data[key]
		if len(rs) == 0 {
			fmt.Fprintf(md, "| %s | %s | no data | | | | | | | | | |\n", v, describe[key])
			continue
		}
		var rps, cpu, back, idle, rpsRatio, cpuRatio []float64
		lost, hasLost := 0.0, false
		for r, res := range rs {
			rps = append(rps, res.rps)
			cpu = append(cpu, res.cpu)
			idle = append(idle, res.idle)
			if res.hasBack {
				back = append(back, res.backCPU)
			}
			rpsRatio = append(rpsRatio, res.vsNone/100)
			if b, ok := base[r]; ok && b.cpu > 0 {
				cpuRatio = append(cpuRatio, res.cpu/b.cpu)
			}
			if res.hasLost {
				lost, hasLost = max(lost, res.lost), true
			}
		}
		lat, err := readLatencies(in, m.bench, v, "lat")
		if err != nil {
			return err
		}
		cyc, err := readLatencies(in, m.bench, v, "cyc")
		if err != nil {
			return err
		}
		q := quantiles(lat, 0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 1)
		lostS := "—"
		if hasLost {
			lostS = fmt.Sprintf("%.2f%%", lost)
		}
		cpuS := fmt.Sprintf("%.1f", median(cpu))
		if len(back) > 0 {
			cpuS += fmt.Sprintf(" (backend %.1f)", median(back))
		}
		fmt.Fprintf(md, "| %s | %s | %.0f | %s | %s | %s | %.1f%% | %.0f | %.0f | %.0f | %.1f | %s |\n",
			v, describe[key], median(rps), pct(rpsRatio), cpuS, pct(cpuRatio), median(idle),
			q[2], q[4], q[5], q[6]/1000, lostS)
		rows = append(rows, plotRow{name: v, lat: []float64{q[0], q[1], q[2], q[3], q[5]}, rps: quantiles(cyc, 0.05, 0.25, 0.5, 0.75, 0.95)})
	}
	if len(rows) == 0 {
		fmt.Fprintf(md, "\nNo results for this benchmark: see the round logs.\n\n")
		return nil
	}
	png := "http-" + strings.ToLower(m.key) + ".png"
	fmt.Fprintf(md, "\n![%s: latency and throughput box plots](%s)\n\n", m.title, png)
	fmt.Fprintf(md, "Left: per-request latency, box from p25 to p75, line at the median, whiskers at p1 and p99 (log scale).\n"+
		"Right: throughput of each 1,000-request chunk, box from p25 to p75, line at the median, whiskers at p5\nand p95.\n\n")
	// Data files for gnuplot: one line per variant, index as x.
	var lat, thr bytes.Buffer
	for i, r := range rows {
		fmt.Fprintf(&lat, "%d %s %g %g %g %g %g\n", i+1, r.name, r.lat[0], r.lat[1], r.lat[2], r.lat[3], r.lat[4])
		fmt.Fprintf(&thr, "%d %s %g %g %g %g %g\n", i+1, r.name, r.rps[0], r.rps[1], r.rps[2], r.rps[3], r.rps[4])
	}
	return plot(out, png, m.title, len(rounds), lat.Bytes(), thr.Bytes(), len(rows))
}

// writeOriginal writes the table of the timer micro-benchmark.
func writeOriginal(md *bytes.Buffer, orig map[string][]float64) {
	if len(orig) == 0 {
		return
	}
	fmt.Fprintf(md, "## Timer micro-benchmark: 200,000 timed empty blocks\n\n")
	fmt.Fprintf(md, "`BenchmarkOriginal` in `bench/core_test.go`: time an empty block 200,000 times, the original\n"+
		"tapes benchmark (about 3 s on CPython, ~15 µs per block). Median over rounds, one run of 10 ops per round.\n\n")
	fmt.Fprintf(md, "| library | ms per 200,000 | ns per timed block | vs tapes |\n|---|---:|---:|---:|\n")
	base := median(orig["tapes"])
	for _, lib := range []string{"tapes", "gometrics", "prometheus", "victoria"} {
		v, ok := orig[lib]
		if !ok {
			continue
		}
		ns := median(v)
		ratio := "—"
		if base > 0 {
			ratio = fmt.Sprintf("%.2fx", ns/base)
		}
		fmt.Fprintf(md, "| %s | %.1f | %.0f | %s |\n", lib, ns/1e6, ns/200000, ratio)
	}
	fmt.Fprintln(md)
}

// pct writes the median of per-round ratios and, with more than two rounds,
// their interquartile range, so the table shows how far rounds disagree.
func pct(ratios []float64) string {
	if len(ratios) == 0 {
		return "—"
	}
	s := fmt.Sprintf("%.1f%%", median(ratios)*100)
	if len(ratios) > 2 {
		r := slices.Clone(ratios)
		slices.Sort(r)
		if lo, hi := quantileF(r, 0.25), quantileF(r, 0.75); hi > lo {
			s += fmt.Sprintf(" (%.0f–%.0f)", lo*100, hi*100)
		}
	}
	return s
}

// readLatencies reads the .lat files (ns, returned in µs) or the .cyc files
// (req/s per chunk) of a variant over every round, sorted.
func readLatencies(in, bench, variant, ext string) ([]float64, error) {
	files, err := filepath.Glob(filepath.Join(in, "lat", bench+"_"+variant+".r*."+ext))
	if err != nil {
		return nil, err
	}
	var lat []float64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			v, err := strconv.ParseFloat(line, 64)
			if err == nil && v > 0 {
				if ext == "lat" {
					v /= 1e3
				}
				lat = append(lat, v)
			}
		}
	}
	slices.Sort(lat)
	return lat, nil
}

// quantiles of sorted values by the nearest-rank rule; zeros if empty.
func quantiles(sorted []float64, qs ...float64) []float64 {
	out := make([]float64, len(qs))
	for i, q := range qs {
		out[i] = quantileF(sorted, q)
	}
	return out
}

func quantileF(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// plot renders the two box plots of one mode with gnuplot.
func plot(out, png, title string, rounds int, lat, thr []byte, n int) error {
	gp, err := exec.LookPath("gnuplot")
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpreport: gnuplot not found (apt-get install gnuplot-nox); skipping", png)
		return nil
	}
	dir, err := os.MkdirTemp("", "httpreport-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	latF, thrF := filepath.Join(dir, "lat.dat"), filepath.Join(dir, "thr.dat")
	if err := os.WriteFile(latF, lat, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(thrF, thr, 0o644); err != nil {
		return err
	}
	script := fmt.Sprintf(`set terminal pngcairo noenhanced size 1200,520 font "DejaVu Sans,11"
set output %q
set multiplot layout 1,2 title %q font "DejaVu Sans,13"
set style fill solid 0.35 border -1
set boxwidth 0.5
set xrange [0.4:%d.6]
set grid ytics
set key off
set title "Latency per request (µs), p1 / p25 / p50 / p75 / p99"
set logscale y
set ylabel "µs"
plot %q using 1:4:3:7:6:xtic(2) with candlesticks whiskerbars 0.5 lc rgb "#3070b0", \
     '' using 1:5:5:5:5 with candlesticks lw 2 lc rgb "black"
unset logscale y
set title "Requests per second of each 1,000-request chunk (%d rounds)"
set ylabel "req/s"
set yrange [0:*]
plot %q using 1:4:3:7:6:xtic(2) with candlesticks whiskerbars 0.5 lc rgb "#40a060", \
     '' using 1:5:5:5:5 with candlesticks lw 2 lc rgb "black"
unset multiplot
`, filepath.Join(out, png), "HTTP, "+title, n, latF, rounds, thrF)
	cmd := exec.Command(gp)
	cmd.Stdin = strings.NewReader(script)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %v\n%s", err, b)
	}
	return nil
}
