#!/usr/bin/env bash
# A fleet you can run and see (docs/fleet.md): three tapes-hosts, each with
# two worker processes recording request latencies per route, labelled by
# one statsd_exporter-format mapping file (mapping.yml), and one Prometheus
# scraping all three with native histograms on. It prints the fleet-wide
# p50/p99 per route that PromQL computes beside the exact pooled values, then
# keeps everything running for a look (Prometheus UI, the hosts' /metrics)
# until Ctrl-C. Needs prometheus on PATH (scripts/install-deps.sh).
#
#   bash examples/fleet/run.sh            # ports 9101-9103 (hosts), 9190 (Prometheus)
#   PORT_BASE=9200 bash examples/fleet/run.sh
#   FLEET_EXIT=1 bash examples/fleet/run.sh   # print the table and exit (status 1 if off by > 1.5%)
set -euo pipefail
cd "$(dirname "$0")/../.."
base=${PORT_BASE:-9100}
n=${FLEET_N:-20000}
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$tmp/tapes-host" ./cmd/tapes-host
go build -o "$tmp/testworker" ./tests/testworker
command -v prometheus >/dev/null || { echo "prometheus not found: run scripts/install-deps.sh" >&2; exit 1; }

wait_http() { # URL: until it answers 200 (15 s)
	for _ in $(seq 150); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
	echo "no answer from $1" >&2; return 1
}

targets=""
seed=1
for i in 1 2 3; do
	port=$((base + i))
	"$tmp/tapes-host" -shm "$tmp/h$i.shm" -http "127.0.0.1:$port" -ring 65536 \
		-mapping examples/fleet/mapping.yml -log-level warn >"$tmp/h$i.log" 2>&1 &
	pids+=($!)
	wait_http "http://127.0.0.1:$port/readyz"
	for _ in 1 2; do
		TAPES_SHM="$tmp/h$i.shm" "$tmp/testworker" -fleet "$seed" -n "$n" >/dev/null
		seed=$((seed + 1))
	done
	targets+="\"127.0.0.1:$port\","
done

cat >"$tmp/prometheus.yml" <<YML
global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: tapes
    static_configs: [{targets: [${targets%,}]}]
YML
prom="127.0.0.1:$((base + 90))"
prometheus --config.file "$tmp/prometheus.yml" --storage.tsdb.path "$tmp/prom" \
	--web.listen-address "$prom" --enable-feature=native-histograms >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://$prom/-/ready"

query() { # PROMQL -> "label value" lines
	curl -fsG "http://$prom/api/v1/query" --data-urlencode "query=$1" |
		python3 -c 'import json,sys
for r in json.load(sys.stdin)["data"]["result"]: print(r["metric"].get("route",""), r["value"][1])'
}
want=$((6 * n))
echo "waiting for Prometheus to scrape all three hosts..."
for _ in $(seq 60); do
	got=$(query 'sum by (route) (histogram_count(fleet_latency_seconds))' | awk -v w="$want" '$2==w' | wc -l)
	[ "$got" = 3 ] && break
	sleep 1
done
[ "$got" = 3 ] || { echo "Prometheus never saw $want values per route" >&2; exit 1; }

bad=0
printf '%-8s %-4s %14s %14s %8s\n' route q PromQL exact error
while read -r route e50 e99; do
	for q in 0.5 0.99; do
		exact=$e50; [ "$q" = 0.99 ] && exact=$e99
		got=$(query "histogram_quantile($q, sum by (route) (fleet_latency_seconds{route=\"$route\"}))" | awk '{print $2}')
		err=$(python3 -c "print(f'{abs($got-$exact)/$exact*100:.3f}')")
		printf '%-8s %-4s %14.6f %14.6f %7s%%\n' "$route" "$q" "$got" "$exact" "$err"
		python3 -c "import sys; sys.exit(0 if abs($got-$exact)/$exact <= 0.015 else 1)" || bad=1
	done
done < <(go run ./internal/fleetdata/exact -seeds 6 -n "$n")

if [ -n "${FLEET_EXIT:-}" ]; then exit $bad; fi
echo
echo "Prometheus: http://$prom/graph   hosts: http://127.0.0.1:$((base + 1))/metrics .. :$((base + 3))"
echo "try: histogram_quantile(0.99, sum by (route) (rate(fleet_latency_seconds[1m])))  (Ctrl-C stops)"
wait
