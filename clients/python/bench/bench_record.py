"""Cost of one recorded event from Python: tapes_shm against
prometheus_client's multiprocess mode, in one process, interleaved.

    TAPES_SHM=... python3 bench_record.py [ROUNDS] [N]

Needs a tapes-host draining $TAPES_SHM with a ring of at least N records
(run.sh starts one with -ring 1048576), so that no tapes event is dropped:
the script waits for the host to drain the ring before every round and
fails if a round dropped anything (a dropped event costs less than a
recorded one and would flatter tapes). prometheus_client writes into its
mmapped files in a fresh PROMETHEUS_MULTIPROC_DIR.

Each operation runs N times per round with timeit, timed by this thread's
CPU clock (time.thread_time: the machine is shared, and time spent
descheduled is not the operation's); rounds alternate between the
libraries; the table shows the median and min over rounds, in ns of CPU per
event, minus nothing (the loop's own cost is shown as its own row).
"""
import os
import statistics
import sys
import tempfile
import time
import timeit

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 11
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000

prom_dir = tempfile.mkdtemp(prefix="tapes-prom-bench-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir  # read when prometheus_client is imported

import prometheus_client  # noqa: E402
from prometheus_client import Counter, Gauge, Histogram  # noqa: E402

import tapes_shm  # noqa: E402

reg = tapes_shm.default_registry()
t_counter = tapes_shm.counter("bench.requests")
t_hist = tapes_shm.histogram("bench.sizes")
t_timer = tapes_shm.timer("bench.latency")
t_gauge = tapes_shm.gauge("bench.inflight", mode="sum")

p_counter = Counter("bench_requests", "requests")
p_hist = Histogram("bench_sizes", "sizes")
p_timer = Histogram("bench_latency_seconds", "latency")
p_gauge = Gauge("bench_inflight", "in flight", multiprocess_mode="livesum")

OPS = [
    ("loop alone", "pass", "pass"),
    ("counter +1", "t_counter.increment()", "p_counter.inc()"),
    ("histogram update", "t_hist.update(1234.5)", "p_hist.observe(1234.5)"),
    ("timer around an empty block", "with t_timer.time(): pass", "with p_timer.time(): pass"),
    ("gauge set", "t_gauge.set(3.0)", "p_gauge.set(3.0)"),
]


def prom_version():
    try:
        from importlib.metadata import version

        return version("prometheus_client")
    except Exception:
        return "?"


def drained():
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        i = reg.info()
        if i["consumer"] == i["reserve"]:
            return
        time.sleep(0.001)
    sys.exit("bench_record: tapes-host did not drain the ring within 30 s; is it running on $TAPES_SHM?")


def main():
    if reg.info()["attached"] and reg.info()["ring_records"] < N:
        sys.exit("bench_record: the ring holds %d records, fewer than N=%d; start tapes-host with -ring >= N" % (reg.info()["ring_records"], N))
    results = {(name, lib): [] for name, _, _ in OPS for lib in ("tapes_shm", "prometheus_client")}
    g = globals()
    for r in range(ROUNDS):
        for name, t_stmt, p_stmt in OPS:
            order = [("tapes_shm", t_stmt), ("prometheus_client", p_stmt)]
            if r % 2:
                order.reverse()
            for lib, stmt in order:
                if lib == "tapes_shm":
                    drained()
                    d0 = reg.info()["dropped"]
                took = timeit.timeit(stmt, globals=g, number=N, timer=time.thread_time)
                if lib == "tapes_shm" and reg.info()["dropped"] != d0:
                    sys.exit("bench_record: tapes events were dropped; use a larger ring")
                results[(name, lib)].append(took / N * 1e9)
    print("python %s, prometheus_client %s, %d rounds of %d events, ns of CPU per event (median, min)" % (
        sys.version.split()[0], prom_version(), ROUNDS, N))
    print()
    print("| operation | tapes_shm | prometheus_client multiprocess | ratio |")
    print("|---|---:|---:|---:|")
    for name, _, _ in OPS:
        t = results[(name, "tapes_shm")]
        p = results[(name, "prometheus_client")]
        tm, pm = statistics.median(t), statistics.median(p)
        print("| %s | %.0f (%.0f) | %.0f (%.0f) | %.1fx |" % (name, tm, min(t), pm, min(p), pm / tm if tm else 0))


if __name__ == "__main__":
    try:
        main()
    finally:
        for f in os.listdir(prom_dir):
            os.unlink(os.path.join(prom_dir, f))
        os.rmdir(prom_dir)
