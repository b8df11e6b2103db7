"""A worker process for tests/python_test.go: records known sequences through
tapes_shm into $TAPES_SHM and prints what it did as one JSON line per step,
so the Go test can compare the host's /stats with exact numbers.

    pyworker.py count N [THREADS]  N events of each kind (per thread), close, exit 0
    pyworker.py hold N             N counter events, print "ready", wait for a signal (SIGKILL)
    pyworker.py fork N M L         N in the parent, M in a forked child and in its own
                                   child, L in the parent after; M in each of 2 multiprocessing children
    pyworker.py fill N             N counter events as fast as possible (the host is stopped)
    pyworker.py gauge V            set one gauge of each mode to V, print "ready", wait
    pyworker.py noslot             try to define a metric, print the error
"""
import json
import multiprocessing
import os
import signal
import sys
import threading
import time

import tapes_shm as tapes


def out(**kw):
    # One write per line: forked children share the pipe, and print() may
    # write the text and its newline separately.
    os.write(1, (json.dumps(kw) + "\n").encode())


def record(n, prefix="py"):
    requests = tapes.counter(prefix + ".requests")
    latency = tapes.timer(prefix + ".latency")
    jobs = tapes.meter(prefix + ".jobs")
    sizes = tapes.histogram(prefix + ".sizes")
    for i in range(1, n + 1):
        requests.increment()
        latency.update_ns(i * 1000)
        jobs.mark(2)
        sizes.update(i)
    requests.decrement(0)  # a zero delta: recorded, changes nothing


def count(n, threads=1):
    if threads == 1:
        record(n)
    else:
        # Handles are shared by the threads: they race on the slot's reserve
        # index (CAS), as the spec's threads of one worker do.
        record(0)
        ts = [threading.Thread(target=record, args=(n,)) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    info = tapes.default_registry().info()
    out(step="recorded", n=n, threads=threads, slot=info["slot"], dropped=info["dropped"], lost=info["lost"])
    tapes.close()


def hold(n):
    c = tapes.counter("py.held")
    for _ in range(n):
        c.increment()
    out(step="ready", pid=os.getpid(), slot=tapes.default_registry().info()["slot"])
    while True:
        signal.pause()


def slot_view():
    i = tapes.default_registry().info()
    return {"pid": os.getpid(), "slot": i.get("slot"), "reserve": i.get("reserve"), "attached": i["attached"]}


def mp_child(m):
    c = tapes.counter("py.forked")
    for _ in range(m):
        c.increment()
    out(step="mp-child", **slot_view())


def fork(n, m, l):
    c = tapes.counter("py.forked")
    for _ in range(n):
        c.increment()
    parent_before = slot_view()
    pid = os.fork()
    if pid == 0:
        # The child uses the parent's handle: it must claim its own slot.
        try:
            for _ in range(m):
                c.increment()
            me = slot_view()
            pid2 = os.fork()
            if pid2 == 0:
                for _ in range(m):
                    c.increment()
                out(step="grandchild", **slot_view())
                os._exit(0)
            os.waitpid(pid2, 0)
            out(step="child", **me)
        finally:
            tapes.close()
            os._exit(0)
    os.waitpid(pid, 0)
    parent_after_child = slot_view()
    ctx = multiprocessing.get_context("fork")
    ps = [ctx.Process(target=mp_child, args=(m,)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    for _ in range(l):
        c.increment()
    out(step="parent", before=parent_before, after_child=parent_after_child, end=slot_view())
    tapes.close()


def fill(n):
    c = tapes.counter("py.filled")
    t0 = time.monotonic()
    for _ in range(n):
        c.increment()
    took = time.monotonic() - t0
    info = tapes.default_registry().info()
    out(step="filled", n=n, dropped=info["dropped"], reserve=info["reserve"], seconds=took)
    tapes.close()


def gauge(v):
    for mode in ("sum", "min", "max", "last", "per-worker"):
        tapes.gauge("py.g." + mode.replace("-", "_"), mode=mode).set(v)
    out(step="ready", pid=os.getpid())
    while True:
        signal.pause()


def noslot():
    try:
        tapes.counter("py.noslot").increment()
    except tapes.NoSlotError as e:
        out(step="noslot", error=str(e))
        sys.exit(3)
    out(step="got a slot")


def main():
    cmd, args = sys.argv[1], [int(float(a)) if a.lstrip("-").isdigit() else float(a) for a in sys.argv[2:]]
    {"count": count, "hold": hold, "fork": fork, "fill": fill, "gauge": gauge, "noslot": noslot}[cmd](*args)


if __name__ == "__main__":
    main()
