#!/bin/sh
# Runs the HTTP benchmarks (bench/http_test.go) and the timer micro-benchmark
# (BenchmarkOriginal in bench/core_test.go) in interleaved rounds, and writes
# bench/results/REPORT.md, the box plots bench/results/http-*.png and the
# tables of docs/benchmarks.md.
#
#   bench/scripts/run.sh                  # 11 rounds of 30,000 requests per variant
#   ROUNDS=3 REQUESTS=10000 bench/scripts/run.sh
#
# Every round is one run of the test binary, in which each benchmark runs all
# its variants side by side, interleaved in chunks of 1,000 requests (see
# benchHTTP in bench/http_test.go), so that bursts of noise on a shared
# machine land on every variant alike; fresh processes every round average
# out per-process effects, and the report takes medians over rounds. Takes
# about 30 s per round on 2 cores. KEEP=1 keeps the raw data directory.
set -eu

ROUNDS=${ROUNDS:-11}
REQUESTS=${REQUESTS:-30000}
here=$(cd "$(dirname "$0")/.." && pwd) # bench/
cd "$here"

if ! command -v gnuplot >/dev/null 2>&1; then
	echo "run.sh: installing gnuplot-nox for the box plots" >&2
	if [ "$(id -u)" = 0 ]; then
		apt-get install -y --no-install-recommends gnuplot-nox >/dev/null
	else
		sudo apt-get install -y --no-install-recommends gnuplot-nox >/dev/null
	fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tapes-httpbench.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -n "${KEEP:-}" ]; then trap - EXIT; echo "run.sh: keeping $work" >&2; fi
go test -c -o "$work/bench.test" .

failed=0
r=1
while [ "$r" -le "$ROUNDS" ]; do
	echo "== round $r of $ROUNDS" >&2
	if ! TAPES_HTTP_BENCH=1 TAPES_HTTP_ROUND=$r TAPES_HTTP_BENCH_OUT="$work/lat" \
		"$work/bench.test" -test.run '^$' -test.bench '^BenchmarkHTTP(Single|Workers)$' \
		-test.benchtime "${REQUESTS}x" >"$work/round-$r.txt" 2>&1; then
		failed=1
		echo "run.sh: round $r had failures:" >&2
		grep -E -- '--- FAIL|FAIL|Error|error' "$work/round-$r.txt" | head -20 >&2 || true
	fi
	# The original's other benchmark, 200,000 timed empty blocks per op
	# (bench/core_test.go), once per round so it is interleaved too.
	if ! "$work/bench.test" -test.run '^$' -test.bench '^BenchmarkOriginal$' -test.benchtime 10x \
		>>"$work/round-$r.txt" 2>&1; then
		failed=1
		echo "run.sh: BenchmarkOriginal failed in round $r" >&2
	fi
	grep -E '^Benchmark(HTTP|Original)' "$work/round-$r.txt" | cut -c1-160 >&2 || true
	r=$((r + 1))
done

go run ./cmd/httpreport -in "$work" -out results \
	-command "ROUNDS=$ROUNDS REQUESTS=$REQUESTS bench/scripts/run.sh" \
	-doc ../docs/benchmarks.md
echo "wrote $here/results/REPORT.md" >&2
exit $failed
