#!/bin/sh
# Runs the Python benchmarks side by side with prometheus_client 0.16
# multiprocess mode and prints their tables (docs/python.md shows the last
# run's):
#
#   clients/python/bench/run.sh                 # everything, ~6 minutes on 2 cores
#   RECORD_ROUNDS=11 SCRAPE_RESTARTS=1000 HTTP_ROUNDS=21 HTTP_SECONDS=2 clients/python/bench/run.sh
#
# It builds tapes-host and the tapes_shm extension into a temporary
# directory (nothing is written into the source tree), then runs
#   bench_record.py  cost per recorded event, in one process
#   bench_scrape.py  scrape time with 8 workers x 1,000 metrics, then after
#                    1,000 worker restarts
#   bench_http.py    gunicorn requests/s: no metrics, tapes_shm, prometheus_client
# Needs Debian's python3-dev, python3-setuptools, python3-prometheus-client,
# gunicorn and wrk (apt-get install wrk). Loopback only.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
py=${PYTHON:-/usr/bin/python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/tapes-pybench.XXXXXX")
hostpid=""
cleanup() {
	[ -n "$hostpid" ] && kill "$hostpid" 2>/dev/null && wait "$hostpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

(cd "$root" && go build -o "$work/tapes-host" ./cmd/tapes-host)
(cd "$here/.." && PYTHONDONTWRITEBYTECODE=1 "$py" setup.py -q build --build-base "$work/build" --build-lib "$work/lib" >"$work/setup.log" 2>&1) || { cat "$work/setup.log" >&2; exit 1; }
export PYTHONPATH="$work/lib" PYTHONDONTWRITEBYTECODE=1

# start_host NAME ARGS: a fresh tapes-host on a new file; sets TAPES_SHM and METRICS.
start_host() {
	name=$1
	shift
	"$work/tapes-host" -shm "$work/$name.shm" -http 127.0.0.1:0 "$@" >"$work/host.out" 2>/dev/null &
	hostpid=$!
	i=0
	while ! grep -q 'metrics: http' "$work/host.out"; do
		i=$((i + 1)); [ $i -lt 300 ] || { echo "run.sh: tapes-host did not start" >&2; exit 1; }
		sleep 0.1
	done
	TAPES_SHM=$(sed -n 's/^TAPES_SHM=//p' "$work/host.out")
	METRICS=$(sed -n 's|.*metrics: \(http://[^ ]*/metrics\).*|\1|p' "$work/host.out")
	export TAPES_SHM
}
stop_host() { kill "$hostpid"; wait "$hostpid" 2>/dev/null || true; hostpid=""; }

echo "## Cost per event"
echo
start_host record -ring 1048576 -slots 4
"$py" "$here/bench_record.py" "${RECORD_ROUNDS:-11}" "${RECORD_N:-100000}"
stop_host
echo
echo "## Scrape time"
echo
start_host scrape -slots 64
"$py" "$here/bench_scrape.py" "$METRICS" "${SCRAPE_WORKERS:-8}" "${SCRAPE_METRICS:-1000}" "${SCRAPE_RESTARTS:-1000}" "${SCRAPE_REPS:-5}"
stop_host
echo
echo "## HTTP (gunicorn)"
echo
"$py" "$here/bench_http.py" "$work/tapes-host" "$work/lib" "${HTTP_ROUNDS:-21}" "${HTTP_SECONDS:-2}"
