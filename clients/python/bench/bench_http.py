"""Requests/s of a gunicorn service timing every request with tapes_shm,
with prometheus_client's multiprocess mode, and with no metrics, side by
side: the seed's HTTP benchmark shape (a handler writing `finished`,
keep-alive requests at concurrency 10) with Python workers.

    python3 bench_http.py TAPES_HOST_BIN LIBDIR [ROUNDS] [SECONDS]

Starts tapes-host (fresh shm file, HTTP on a free loopback port) and three
gunicorn servers at once (2 gthread workers each, one per core, keep-alive),
all on 127.0.0.1. Each round runs `wrk -t1 -c10 -d SECONDS` against every
variant in turn, the order rotating every round, so that a burst of noise on
the shared machine lands on every variant alike; the ratio to no metrics is
taken per round and its median reported over rounds. At the end the tapes
variant's request count in tapes-host's /stats and the prometheus variant's
histogram count are checked against the requests served.
"""
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HOST_BIN, LIB = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 7
SECONDS = int(sys.argv[4]) if len(sys.argv) > 4 else 3
HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ["none", "tapes", "prom"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def wait_http(url, what, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(url)
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("bench_http: %s did not answer within %ds" % (what, timeout))
            time.sleep(0.05)


def cpu_seconds(pids):
    """CPU time of the processes (every thread), in seconds, from
    /proc/PID/task/*/schedstat (nanoseconds; the tick-based utime is too
    coarse for chunks of a few seconds)."""
    t = 0
    for pid in pids:
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    t += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return t / 1e9


def family(pid):
    """pid and its children (a gunicorn master and its workers)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [pid] + [int(x) for x in f.read().split()]
    except OSError:
        return [pid]


def wrk(port, seconds):
    out = subprocess.run(["wrk", "-t1", "-c10", "-d%ds" % seconds, "http://127.0.0.1:%d/" % port],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if "Non-2xx" in out or (m and any(int(x) for x in m.groups()[:3])):
        sys.exit("bench_http: wrk saw errors:\n" + out)
    # A timeout (a response slower than 2 s) is the shared machine stalling,
    # not an error of the server: counted and reported.
    timeouts = int(m.group(4)) if m else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, n, timeouts


def main():
    if not shutil.which("wrk"):
        sys.exit("bench_http: wrk is missing (Debian: apt-get install wrk)")
    gunicorn = shutil.which("gunicorn") or sys.exit("bench_http: gunicorn is missing (Debian: apt-get install gunicorn)")
    work = tempfile.mkdtemp(prefix="tapes-pyhttp-")
    procs = []
    try:
        host = subprocess.Popen([HOST_BIN, "-shm", os.path.join(work, "b.shm"), "-http", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(host)
        addr = shm = None
        while addr is None or shm is None:
            line = host.stdout.readline()
            if not line:
                sys.exit("bench_http: tapes-host exited")
            m = re.search(r"metrics: http://(\S+)/metrics", line)
            addr = m.group(1) if m else addr
            m = re.search(r"TAPES_SHM=(\S+)", line)
            shm = m.group(1) if m else shm
        prom_dir = os.path.join(work, "prom")
        os.mkdir(prom_dir)
        ports, masters = {}, {}
        for v in VARIANTS:
            ports[v] = free_port()
            env = dict(os.environ, BENCH_VARIANT=v, PYTHONPATH=LIB, PYTHONDONTWRITEBYTECODE="1")
            if v == "tapes":
                env["TAPES_SHM"] = shm
            if v == "prom":
                env["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
            masters[v] = subprocess.Popen(
                [gunicorn, "-w", "2", "-k", "gthread", "--threads", "10", "--keep-alive", "60",
                 "-b", "127.0.0.1:%d" % ports[v], "--chdir", HERE, "--log-level", "warning", "httpapp:app"],
                env=env)
            procs.append(masters[v])
        for v in VARIANTS:
            if wait_http("http://127.0.0.1:%d/" % ports[v], "gunicorn " + v) != b"finished":
                sys.exit("bench_http: %s did not answer finished" % v)
        for v in VARIANTS:
            wrk(ports[v], 1)  # warm-up
        served = {v: 0 for v in VARIANTS}
        rps = {v: [] for v in VARIANTS}
        cpu = {v: 0.0 for v in VARIANTS}
        timeouts = {v: 0 for v in VARIANTS}
        host_cpu = 0.0
        for r in range(ROUNDS):
            order = VARIANTS[r % 3:] + VARIANTS[:r % 3]
            for v in order:
                pids = family(masters[v].pid)
                c0, h0 = cpu_seconds(pids), cpu_seconds([host.pid])
                x, n, to = wrk(ports[v], SECONDS)
                timeouts[v] += to
                if v == "tapes":
                    time.sleep(0.05)  # the host's last drain of the chunk is the chunk's
                c1, h1 = cpu_seconds(pids), cpu_seconds([host.pid])
                cpu[v] += c1 - c0
                if v == "tapes":
                    cpu[v] += h1 - h0
                    host_cpu += h1 - h0
                rps[v].append(x)
                served[v] += n
            print("round %d: " % (r + 1) + ", ".join("%s %.0f" % (v, rps[v][-1]) for v in VARIANTS), file=sys.stderr)
        # Every request served by the tapes variant reached tapes-host (warm-up
        # and in-flight requests at wrk's end make it a little more than counted).
        time.sleep(0.5)
        st = json.loads(get("http://%s/stats" % addr))
        tcount = st["http"]["index"]["latency"]["count"]
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg, prom_dir)
        pcount = float(re.search(r"(?m)^http_index_latency_seconds_count (\S+)$", generate_latest(reg).decode()).group(1))
        print("%d rounds of wrk -t1 -c10 -d%ds per variant; gunicorn -w 2 -k gthread --threads 10; python %s" % (
            ROUNDS, SECONDS, sys.version.split()[0]))
        print()
        print("| variant | requests/s (median) | vs no metrics, median of per-round ratios (min-max) | server CPU per request (µs) | requests served / counted by the backend |")
        print("|---|---:|---:|---:|---:|")
        for v in VARIANTS:
            ratios = [a / b for a, b in zip(rps[v], rps["none"])]
            counted = {"none": "-", "tapes": "%d (tapes-host)" % tcount, "prom": "%d (prometheus_client)" % pcount}[v]
            per = "%.1f" % (cpu[v] / served[v] * 1e6)
            if v == "tapes":
                per += " (tapes-host %.1f)" % (host_cpu / served[v] * 1e6)
            print("| %s | %.0f | %.1f%% (%.1f-%.1f%%) | %s | %d / %s |" % (
                v, statistics.median(rps[v]), 100 * statistics.median(ratios), 100 * min(ratios), 100 * max(ratios),
                per, served[v], counted))
        if any(timeouts.values()):
            print()
            print("wrk timeouts (responses slower than 2 s, the machine stalling): " +
                  ", ".join("%s %d" % (v, timeouts[v]) for v in VARIANTS))
        if tcount < served["tapes"] or pcount < served["prom"]:
            sys.exit("bench_http: a backend counted fewer requests than wrk saw served")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
