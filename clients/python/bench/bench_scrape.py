"""Scrape time with many workers: tapes-host's /metrics against
prometheus_client's multiprocess collector, with W live workers x M metrics,
then again after R worker restarts.

    TAPES_SHM=... python3 bench_scrape.py METRICS_URL [W] [M] [R] [REPS]

prometheus_client's multiprocess mode writes one mmapped file per process
and reads every file at every scrape; files of dead processes stay (a
counter's count must not go backwards), so a service that restarts workers
scrapes ever more files (its issue #204). tapes-host keeps the totals in its
registry: a scrape reads nothing else, and a dead worker's slot is drained
and reused.

Every worker (a forked process) records into both libraries: M counters,
each incremented once. The tapes scrape is an HTTP GET of tapes-host's
/metrics on a kept-alive connection; the prometheus scrape is what its
/metrics handler runs, in this process, without HTTP:
generate_latest(CollectorRegistry with a MultiProcessCollector). Both
results are checked: every metric must read W (then W + R).
"""
import http.client
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse

URL = sys.argv[1]
W = int(sys.argv[2]) if len(sys.argv) > 2 else 8
M = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
R = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
REPS = int(sys.argv[5]) if len(sys.argv) > 5 else 5

prom_dir = tempfile.mkdtemp(prefix="tapes-prom-scrape-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir

from prometheus_client import CollectorRegistry, Counter, generate_latest  # noqa: E402
from prometheus_client import multiprocess  # noqa: E402

import tapes_shm  # noqa: E402

NAMES = ["scrape.m%04d" % i for i in range(M)]


def record_all():
    """One worker's life: M counters in each library, each +1."""
    while True:
        try:
            reg = tapes_shm.Registry()
            tc = [reg.counter(n) for n in NAMES]
            break
        except tapes_shm.NoSlotError:
            time.sleep(0.05)  # the host frees exited workers' slots every 250 ms
    pc = [Counter(n.replace(".", "_"), "bench", registry=None) for n in NAMES]
    for c in tc:
        c.increment()
    for c in pc:
        c.inc()
    return reg


def spawn_live(n):
    """n workers that record and then wait for a byte on their pipe."""
    kids = []
    for _ in range(n):
        rd_ready, wr_ready = os.pipe()
        rd_stop, wr_stop = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rd_ready)
            os.close(wr_stop)
            reg = record_all()
            os.write(wr_ready, b"r")
            os.read(rd_stop, 1)
            reg.close()
            os._exit(0)
        os.close(wr_ready)
        os.close(rd_stop)
        if os.read(rd_ready, 1) != b"r":
            sys.exit("bench_scrape: a worker failed")
        os.close(rd_ready)
        kids.append((pid, wr_stop))
    return kids


def restart(n):
    """n workers, one after the other, each recording and exiting."""
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                record_all().close()
                code = 0
            finally:
                os._exit(code)
        _, st = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(st) != 0:
            sys.exit("bench_scrape: a restarted worker failed")


u = urllib.parse.urlsplit(URL)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)


def scrape_tapes():
    conn.request("GET", u.path or "/metrics")
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit("bench_scrape: tapes-host answered %d" % r.status)
    return body.decode()


def scrape_prom():
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    return generate_latest(reg).decode()


def check(body, want, what):
    vals = [float(v) for v in re.findall(r"(?m)^scrape_m\d{4}(?:_total)? (\S+)$", body)]
    if len(vals) != M or any(v != want for v in vals):
        sys.exit("bench_scrape: %s: %d series, values %s, want %d series of %d" % (what, len(vals), sorted(set(vals))[:5], M, want))


def measure(want, reps, label):
    times = {"tapes-host": [], "prometheus_client": []}
    for i in range(reps):
        order = [("tapes-host", scrape_tapes), ("prometheus_client", scrape_prom)]
        if i % 2:
            order.reverse()
        for lib, f in order:
            t0 = time.perf_counter()
            body = f()
            times[lib].append(time.perf_counter() - t0)
            check(body, want, "%s %s" % (lib, label))
    files = len(os.listdir(prom_dir))
    size = sum(os.path.getsize(os.path.join(prom_dir, f)) for f in os.listdir(prom_dir))
    print("| %s | %.1f (%.1f-%.1f) | %.1f (%.1f-%.1f) | %d files, %.1f MiB |" % (
        label,
        statistics.median(times["tapes-host"]) * 1e3, min(times["tapes-host"]) * 1e3, max(times["tapes-host"]) * 1e3,
        statistics.median(times["prometheus_client"]) * 1e3, min(times["prometheus_client"]) * 1e3,
        max(times["prometheus_client"]) * 1e3, files, size / 2**20), flush=True)


def wait_tapes(want):
    deadline = time.monotonic() + 60
    while True:
        try:
            check(scrape_tapes(), want, "tapes-host")
            return
        except SystemExit:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main():
    print("%d live workers x %d counters; scrape time in ms, median (min-max) of %d" % (W, M, REPS))
    print()
    print("| state | tapes-host /metrics (HTTP) | prometheus_client multiprocess (in process) | prometheus files |")
    print("|---|---:|---:|---:|")
    kids = spawn_live(W)
    wait_tapes(W)
    measure(W, REPS, "%d workers" % W)
    t0 = time.monotonic()
    restart(R)
    took = time.monotonic() - t0
    wait_tapes(W + R)
    measure(W + R, max(3, REPS // 2), "after %d restarts" % R)
    print()
    print("(%d restarts took %.1f s)" % (R, took))
    for pid, wr in kids:
        os.write(wr, b"s")
        os.waitpid(pid, 0)


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(prom_dir, ignore_errors=True)
