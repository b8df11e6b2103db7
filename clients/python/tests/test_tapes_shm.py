"""Unit tests of tapes_shm, run by tests/python_test.go (TestPythonUnittest).

Two kinds of files are used:
- the live file of a real tapes-host ($TAPES_SHM; the host's /stats URL in
  $TAPES_TEST_STATS), to check what reaches the host;
- files this test writes itself from docs/shm-layout.md with no host
  draining them, to check the client alone: drops when the ring is full,
  scrubbing of a scribbled FREE slot, header validation, slot exhaustion.

A missing $TAPES_SHM fails the live tests; nothing is skipped.
"""
import asyncio
import json
import math
import mmap
import os
import struct
import tempfile
import threading
import time
import unittest
import urllib.request

import tapes_shm
from tapes_shm import _native

LIVE = os.environ.get("TAPES_SHM")
STATS = os.environ.get("TAPES_TEST_STATS")

# docs/shm-layout.md, restated independently of the C source.
def header(version):
    """Layout 3's header is 640 bytes (two lines and the doorbell), 2's and 1's 128."""
    return 640 if version >= 3 else 128


DEF_SIZE = 272
REC = 16


def align64(x):
    return (x + 63) // 64 * 64


def geometry(slots, ring, max_defs, version=3):
    ring_off = align64(256 + max_defs * DEF_SIZE)
    slot_size = align64(ring_off + ring * REC)
    return ring_off, slot_size, header(version) + slots * slot_size + (64 if version >= 2 else 0)


def make_file(path, slots=2, ring=8, max_defs=4, version=3, **overrides):
    """A file as a host of layout version 3 (or 2, or 1) creates it."""
    ring_off, slot_size, size = geometry(slots, ring, max_defs, version)
    f = dict(version=version, header_size=header(version), def_size=DEF_SIZE, slot_size=slot_size, file_size=size, def_off=256,
             ring_off=ring_off, reserved=b"\0" * 8, length=size)
    f.update(overrides)
    hdr = b"TAPESHM\0" + struct.pack("<IIIIIIQQII", f["version"], f["header_size"], slots, ring, max_defs,
                                     f["def_size"], f["slot_size"], f["file_size"], f["def_off"], f["ring_off"])
    hdr += f["reserved"]
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, f["length"])
        os.pwrite(fd, hdr, 0)
    finally:
        os.close(fd)
    return ring_off, slot_size


class RawFile:
    """A read-write view of a shm file through Python's mmap (no atomics:
    used only while no host runs, or for fields the host does not write)."""

    def __init__(self, path):
        self.f = open(path, "r+b")
        self.m = mmap.mmap(self.f.fileno(), 0)
        version, = struct.unpack_from("<I", self.m, 8)
        self.slots, self.ring, self.max_defs = struct.unpack_from("<III", self.m, 16)
        self.ring_off, self.slot_size, _ = geometry(self.slots, self.ring, self.max_defs, version)
        self.header = header(version)

    def close(self):
        self.m.close()
        self.f.close()

    def base(self, i):
        return self.header + i * self.slot_size

    def u64(self, i, off):
        return struct.unpack_from("<Q", self.m, self.base(i) + off)[0]

    def put64(self, i, off, v):
        struct.pack_into("<Q", self.m, self.base(i) + off, v)

    def state(self, i):
        w = self.u64(i, 0)
        return w >> 32, (w >> 8) & 0xFFFFFF, w & 0xFF

    def record(self, i, k):
        off = self.base(i) + self.ring_off + k * REC
        w0, v = struct.unpack_from("<QQ", self.m, off)
        return w0 & 0xFFFFFFFF, (w0 >> 32) & 0xFF, (w0 >> 40), v

    def definition(self, i, d):
        off = self.base(i) + 256 + d * DEF_SIZE
        kind, mode, n, zero = struct.unpack_from("<BBBB", self.m, off)
        gset, gval = struct.unpack_from("<IQ", self.m, off + 4)
        name = bytes(self.m[off + 16: off + 16 + n]).decode()
        return kind, mode, name, zero, gset, gval


def self_start_time():
    with open("/proc/self/stat") as f:
        s = f.read()
    return int(s[s.rindex(")") + 1:].split()[19])


def stats():
    with urllib.request.urlopen(STATS, timeout=10) as r:
        return json.load(r)


def lookup(tree, path):
    for seg in path.split("."):
        if not isinstance(tree, dict) or seg not in tree:
            return None
        tree = tree[seg]
    return tree


def wait_stat(test, path, want, timeout=60):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = lookup(stats(), path)
        if got == want if not callable(want) else (got is not None and want(got)):
            return got
        time.sleep(0.02)
    test.fail("%s = %r after %ss, want %r" % (path, got, timeout, want))


class Tmp(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def path(self, name="t.shm"):
        return os.path.join(self.dir.name, name)


class TestNames(unittest.TestCase):
    def setUp(self):
        self.assertTrue(LIVE, "TAPES_SHM must name a live tapes-host file")
        self.r = tapes_shm.Registry(LIVE)
        self.addCleanup(self.r.close)

    def test_invalid_names(self):
        for bad in ["", "a..b", "a.", ".a", "a b", "a/b", "caf\u00e9", "x" * 256, None, 3]:
            with self.assertRaises(tapes_shm.InvalidNameError, msg=repr(bad)):
                self.r.counter(bad)
        self.r.counter("n." + "x" * 253)  # 255 bytes: the limit

    def test_same_name_same_handle(self):
        self.assertIs(self.r.timer("n.t"), self.r.timer("n.t"))
        self.assertEqual(self.r.timer("n.t").name, "n.t")

    def test_kind_conflict(self):
        self.r.counter("n.k")
        for f in (self.r.timer, self.r.meter, self.r.histogram, self.r.gauge):
            with self.assertRaises(tapes_shm.KindConflictError):
                f("n.k")

    def test_prefix_conflict(self):
        self.r.counter("n.p.q")
        with self.assertRaises(tapes_shm.PrefixConflictError):
            self.r.counter("n.p")
        with self.assertRaises(tapes_shm.PrefixConflictError):
            self.r.meter("n.p.q.r")

    def test_mode_conflict(self):
        g = self.r.gauge("n.g", mode="min")
        self.assertIs(self.r.gauge("n.g"), g)
        self.assertIs(self.r.gauge("n.g", mode=tapes_shm.MIN), g)
        with self.assertRaises(tapes_shm.ModeConflictError):
            self.r.gauge("n.g", mode="max")
        with self.assertRaises(tapes_shm.ModeConflictError):
            self.r.gauge_mode("n.g", "sum")
        with self.assertRaises(ValueError):
            self.r.gauge("n.h", mode="average")
        self.r.gauge_mode("n.declared", "last")
        self.r.gauge("n.declared")
        with self.assertRaises(tapes_shm.ModeConflictError):
            self.r.gauge("n.declared", mode="sum")

    def test_bad_arguments(self):
        c = self.r.counter("n.args")
        with self.assertRaises(TypeError):
            c.increment(1.5)
        with self.assertRaises(TypeError):
            c.increment(1, 2)
        with self.assertRaises(TypeError):
            self.r.histogram("n.h2").update("x")
        g = self.r.gauge("n.fin")
        for v in (math.nan, math.inf, -math.inf):
            with self.assertRaises(ValueError):
                g.set(v)


class TestLive(unittest.TestCase):
    """Against the real tapes-host: what a registry records is what /stats shows."""

    def setUp(self):
        self.assertTrue(LIVE and STATS, "TAPES_SHM and TAPES_TEST_STATS must be set")
        self.r = tapes_shm.Registry(LIVE)
        self.addCleanup(self.r.close)

    def test_kinds_reach_host(self):
        c = self.r.counter("ut.kinds.requests")
        for _ in range(7):
            c.increment()
        c.increment(5)
        c.decrement()
        c.decrement(3)
        self.r.meter("ut.kinds.jobs").mark()
        self.r.meter("ut.kinds.jobs").mark(4)
        h = self.r.histogram("ut.kinds.sizes")
        for v in (1, 2.5, 1000):
            h.update(v)
        wait_stat(self, "ut.kinds.requests.value", 8)
        wait_stat(self, "ut.kinds.jobs.count", 5)
        wait_stat(self, "ut.kinds.sizes.count", 3)
        self.assertEqual(lookup(stats(), "ut.kinds.sizes.max"), 1000)
        self.assertEqual(lookup(stats(), "ut.kinds.sizes.min"), 1)

    def test_defined_metric_appears_before_an_event(self):
        self.r.counter("ut.idle.counter")
        wait_stat(self, "ut.idle.counter.value", 0)

    def test_timer_context_manager_and_decorator(self):
        t = self.r.timer("ut.timer.latency")
        with t.time():
            time.sleep(0.02)

        @t.time()
        def work(x):
            return x * 2

        self.assertEqual(work.__name__, "work")
        self.assertEqual([work(1), work(2)], [2, 4])

        @t.time()
        async def coro():
            await asyncio.sleep(0.01)
            return "done"

        self.assertEqual(asyncio.run(coro()), "done")
        sw = t.time()
        time.sleep(0.001)
        self.assertGreaterEqual(sw.stop(), 0.001)
        t.update(0.5)
        with self.assertRaises(RuntimeError):
            with t.time():
                raise RuntimeError("the block's exception propagates")
        wait_stat(self, "ut.timer.latency.count", 7)
        st = stats()
        self.assertAlmostEqual(lookup(st, "ut.timer.latency.max"), 0.5, delta=0.005)
        self.assertGreaterEqual(lookup(st, "ut.timer.latency.min"), 0)

    def test_negative_or_nan_duration_not_recorded(self):
        t = self.r.timer("ut.timer.neg")
        before = self.r.info()["reserve"]
        t.update(-1)
        t.update(math.nan)
        t.update_ns(-5)
        self.assertEqual(self.r.info()["reserve"], before)

    def test_function_gauge_sampled(self):
        r = tapes_shm.Registry(LIVE, sample_interval=0.05)
        self.addCleanup(r.close)
        box = [1.0]
        g = r.gauge("ut.fgauge", lambda: box[0], mode="max")
        g.set(99)  # a function gauge ignores set: the function wins
        wait_stat(self, "ut.fgauge.value", 1.0)
        box[0] = 42.0
        wait_stat(self, "ut.fgauge.value", 42.0)

    def test_threads_share_handles(self):
        c = self.r.counter("ut.threads.requests")
        i0 = self.r.info()

        def run():
            for _ in range(5000):
                c.increment()

        ts = [threading.Thread(target=run) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        i1 = self.r.info()
        # Every event is either in the ring or counted as dropped (the host
        # may be descheduled long enough for the ring to fill).
        recorded = i1["reserve"] - i0["reserve"]
        self.assertEqual(recorded + i1["dropped"] - i0["dropped"], 20000)
        wait_stat(self, "ut.threads.requests.value", recorded)

    def test_fork_child_gets_own_slot(self):
        c = self.r.counter("ut.fork.requests")
        for _ in range(10):
            c.increment()
        parent = self.r.info()
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(rd)
                for _ in range(5):
                    c.increment()
                os.write(wr, json.dumps(self.r.info()).encode())
                self.r.close()
                code = 0
            finally:
                os._exit(code)
        os.close(wr)
        with os.fdopen(rd) as f:
            child = json.loads(f.read())
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertNotEqual(child["slot"], parent["slot"])
        self.assertEqual(child["pid"], pid)
        self.assertEqual(child["reserve"], 5)
        self.assertEqual(self.r.info()["reserve"], parent["reserve"], "the child wrote into the parent's slot")
        self.assertEqual(self.r.info()["slot"], parent["slot"])
        wait_stat(self, "ut.fork.requests.value", 15)

    def test_raw_clone_child_detected_by_pid(self):
        # clone(2) without libc's fork runs no atfork handler; the pid check
        # on the slow paths (here info()) still keeps the child out of the
        # parent's slot.
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        c = self.r.counter("ut.clone.requests")
        c.increment()
        parent = self.r.info()
        rd, wr = os.pipe()
        import platform

        SYS_clone = {"x86_64": 56, "aarch64": 220}[platform.machine()]
        SIGCHLD = 17
        pid = libc.syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0)
        if pid == 0:
            code = 1
            try:
                seen = self.r.info()["attached"]
                c.increment()
                os.write(wr, json.dumps([seen, self.r.info()]).encode())
                code = 0
            finally:
                os._exit(code)
        self.assertGreater(pid, 0, ctypes.get_errno())
        os.close(wr)
        with os.fdopen(rd) as f:
            seen, child = json.loads(f.read())
        os.waitpid(pid, 0)
        self.assertFalse(seen, "the cloned child thought it held the parent's slot")
        self.assertNotEqual(child["slot"], parent["slot"])
        self.assertEqual(child["reserve"], 1)
        self.assertEqual(self.r.info()["reserve"], parent["reserve"])
        wait_stat(self, "ut.clone.requests.value", 2)

    def test_close_then_record_is_counted_lost(self):
        r = tapes_shm.Registry(LIVE)
        c = r.counter("ut.closed.requests")
        c.increment()
        slot = r.info()["slot"]
        r.close()
        c.increment()
        c.increment()
        info = r.info()
        self.assertTrue(info["closed"])
        self.assertEqual(info["lost"], 2)
        wait_stat(self, "ut.closed.requests.value", 1)
        with self.assertRaises(tapes_shm.ShmError):
            r.counter("ut.closed.other")
        self.assertIsInstance(slot, int)

    def test_dropped_client_closes_its_slot(self):
        import gc

        r = tapes_shm.Registry(LIVE)
        r.counter("ut.dropped.requests").increment()
        info = r.info()
        raw = RawFile(LIVE)
        self.addCleanup(raw.close)
        self.assertEqual(raw.state(info["slot"]), (os.getpid(), info["generation"], 1))
        del r
        gc.collect()
        # CLOSED by this process, or being freed (RECLAIMING) or already
        # freed by the host, which reclaims a closed slot on the pass its
        # doorbell brings (docs/shm-layout.md, slot states).
        pid, gen, st = raw.state(info["slot"])
        self.assertTrue(st == 2 or (st in (0, 3) and pid == 0), (pid, gen, st))
        wait_stat(self, "ut.dropped.requests.value", 1)

    def test_handle_outlives_registry(self):
        r = tapes_shm.Registry(LIVE)
        c = r.counter("ut.outlive.requests")
        del r
        import gc

        gc.collect()
        c.increment()  # the mapping stays while a handle can use it
        wait_stat(self, "ut.outlive.requests.value", 1)

    def test_slot_fields_as_the_spec_says(self):
        r = tapes_shm.Registry(LIVE)
        self.addCleanup(r.close)
        r.counter("ut.raw.requests")
        r.gauge("ut.raw.gauge", mode="per-worker").set(2.5)
        info = r.info()
        raw = RawFile(LIVE)
        self.addCleanup(raw.close)
        pid, gen, st = raw.state(info["slot"])
        self.assertEqual((pid, gen, st), (os.getpid(), info["generation"], 1))
        self.assertEqual(raw.u64(info["slot"], 8), self_start_time())
        self.assertEqual(raw.u64(info["slot"], 80), 2)  # defCount
        kind, mode, name, zero, gset, gval = raw.definition(info["slot"], 1)
        self.assertEqual((kind, mode, name, zero, gset), (2, 5, "ut.raw.gauge", 0, 1))
        self.assertEqual(struct.unpack("<d", struct.pack("<Q", gval))[0], 2.5)
        self.assertEqual(raw.definition(info["slot"], 0)[:4], (1, 0, "ut.raw.requests", 0))

    def test_distributed_registry_alias(self):
        r = tapes_shm.DistributedRegistry(LIVE).connect()
        self.addCleanup(r.close)
        r.histogram("ut.dist.sizes").update(3)
        wait_stat(self, "ut.dist.sizes.count", 1)


class TestWithoutHost(Tmp):
    """Files this test writes from the spec, with no host draining them."""

    def test_full_ring_drops_and_counts(self):
        p = self.path()
        make_file(p, ring=8)
        r = tapes_shm.Registry(p)
        c = r.counter("x.c")
        t0 = time.monotonic()
        for _ in range(1000):
            c.increment(3)
        self.assertLess(time.monotonic() - t0, 5, "recording into a full ring must not wait")
        info = r.info()
        self.assertEqual((info["reserve"], info["dropped"]), (8, 992))
        raw = RawFile(p)
        self.addCleanup(raw.close)
        for k in range(8):
            self.assertEqual(raw.record(info["slot"], k), (0, 1, 0, 3))
        # The host releases 4 records (zeroes them, consumer += 4): room for 4 more.
        for k in range(4):
            raw.m[raw.base(info["slot"]) + raw.ring_off + k * REC: raw.base(info["slot"]) + raw.ring_off + (k + 1) * REC] = b"\0" * REC
        raw.put64(info["slot"], 192, 4)
        for _ in range(10):
            c.increment()
        info = r.info()
        self.assertEqual((info["reserve"], info["dropped"]), (12, 998))
        self.assertEqual([raw.record(info["slot"], k)[3] for k in range(8)], [1, 1, 1, 1, 3, 3, 3, 3])
        r.close()
        self.assertEqual(raw.state(info["slot"])[2], 2)  # CLOSED

    def test_records_match_wire(self):
        p = self.path()
        make_file(p, ring=16, max_defs=8)
        r = tapes_shm.Registry(p)
        r.counter("w.c").decrement(2)
        r.meter("w.m").mark(7)
        r.timer("w.t").update(0.25)
        r.histogram("w.h").update(-1.5)
        r.gauge("w.g", mode="last").set(4.0)
        raw = RawFile(p)
        self.addCleanup(raw.close)
        s = r.info()["slot"]
        got = [raw.record(s, k) for k in range(5)]
        f = lambda x: struct.unpack("<Q", struct.pack("<d", x))[0]
        self.assertEqual(got, [(0, 1, 0, (1 << 64) - 2), (1, 3, 0, 7), (2, 4, 0, 250_000_000), (3, 5, 0, f(-1.5)),
                               (4, 2, 0, f(4.0))])
        self.assertEqual(raw.definition(s, 4)[:2], (2, 4))
        r.close()

    def test_claim_scrubs_a_scribbled_free_slot(self):
        p = self.path()
        ring_off, slot_size = make_file(p, slots=1, ring=8, max_defs=4)
        raw = RawFile(p)
        self.addCleanup(raw.close)
        raw.put64(0, 0, 7 << 8)  # FREE, generation 7
        for off, v in ((8, 99), (16, 1), (64, 77), (72, 5), (80, 3), (96, 4)):
            raw.put64(0, off, v)
        for k in range(8):
            struct.pack_into("<QQ", raw.m, raw.base(0) + ring_off + k * REC, 0x0000_0001_0000_0009, 1234)
        r = tapes_shm.Registry(p)
        c = r.counter("s.c")
        c.increment()
        self.assertEqual(raw.state(0), (os.getpid(), 8, 1))
        self.assertEqual(raw.u64(0, 8), self_start_time())
        for off, want in ((16, 0), (64, 1), (72, 0), (80, 1), (96, 0)):
            self.assertEqual(raw.u64(0, off), want, "slot offset %d" % off)
        self.assertEqual(raw.record(0, 0), (0, 1, 0, 1))
        for k in range(1, 8):
            self.assertEqual(raw.record(0, k), (0, 0, 0, 0), "ring record %d" % k)
        r.close()

    def test_no_free_slot(self):
        for version in (1, 2, 3):
            p = self.path("v%d" % version)
            make_file(p, slots=1, version=version)
            a = tapes_shm.Registry(p)
            a.counter("a.c").increment()
            b = tapes_shm.Registry(p, slot_wait=0.05)
            t0 = time.monotonic()
            with self.assertRaisesRegex(tapes_shm.NoSlotError, "no free worker slot"):
                b.counter("b.c")
            self.assertGreaterEqual(time.monotonic() - t0, 0.05, "it waited for a slot")
            raw = RawFile(p)
            claim_waits, refused = struct.unpack_from("<QQ", raw.m, 72)
            if version >= 2:
                self.assertGreater(claim_waits, 1)  # one per scan
                self.assertEqual(refused, 1)
            else:
                self.assertEqual((claim_waits, refused), (0, 0), "version 1: bytes 68..127 are the host's")
            raw.close()
            a.close()
            b.close()

    def test_v2_claim_goes_through_claiming_and_scrubs_host_indices(self):
        p = self.path()
        ring_off, slot_size = make_file(p, slots=1, ring=8, max_defs=4, version=2)
        raw = RawFile(p)
        self.addCleanup(raw.close)
        raw.put64(0, 0, 3 << 8)  # FREE, generation 3
        raw.put64(0, 192, 5)  # consumer
        raw.put64(0, 200, 6)  # taking
        raw.put64(0, 232, 9)  # host line's reserved bytes
        r = tapes_shm.Registry(p)
        r.counter("v.c").increment()
        self.assertEqual(raw.state(0), (os.getpid(), 4, 1))
        for off in (192, 200, 232):
            self.assertEqual(raw.u64(0, off), 0, "slot offset %d" % off)
        self.assertEqual((raw.u64(0, 64), raw.record(0, 0)), (1, (0, 1, 0, 1)))
        r.close()
        # The trailer (the host's canary) is never touched.
        self.assertEqual(bytes(raw.m[-64:]), b"\0" * 64)

    def test_doorbell_only_from_v3(self):
        # Slot 0 is held by a live process, so the client claims slot 1,
        # whose doorbell bit is bit 1 of the word at file byte 128: in
        # layout 3 the doorbell, in layouts 1 and 2 slot 0's state word,
        # where that bit would turn ACTIVE into another state.
        held = (os.getppid() << 32) | (1 << 8) | 1
        for version in (1, 2, 3):
            p = self.path("bell%d" % version)
            make_file(p, slots=2, version=version)
            raw = RawFile(p)
            raw.put64(0, 0, held)
            r = tapes_shm.Registry(p)
            c = r.counter("b.c")
            for _ in range(3):
                c.increment()
            self.assertEqual(raw.state(1)[0], os.getpid(), "version %d: slot 1 claimed" % version)
            r.close()
            self.assertEqual(raw.u64(0, 0), held, "version %d: slot 0's state word" % version)
            if version >= 3:
                bell, = struct.unpack_from("<Q", raw.m, 128)
                self.assertEqual(bell, 2, "version 3: slot 1's doorbell bit")
            raw.close()

    def test_reserved_names(self):
        p = self.path()
        make_file(p)
        r = tapes_shm.Registry(p)
        for name in ("tapes", "tapes.x", "tapes.host.shm.x"):
            with self.assertRaises(tapes_shm.ReservedNameError):
                r.counter(name)
        r.counter("tapesx.ok")
        r.close()

    def test_forked_child_without_a_free_slot_counts_lost(self):
        p = self.path()
        make_file(p, slots=1)
        r = tapes_shm.Registry(p)
        c = r.counter("f.c")
        c.increment()
        parent = r.info()
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for _ in range(2000):
                    c.increment()  # never raises, never blocks: lost and counted
                os.write(wr, json.dumps(r.info()).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(wr)
        with os.fdopen(rd) as f:
            child = json.loads(f.read())
        _, st = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(st), 0)
        self.assertEqual((child["attached"], child["lost"]), (False, 2000))
        self.assertEqual(r.info()["reserve"], parent["reserve"])
        r.close()

    def test_too_many_metrics(self):
        p = self.path()
        make_file(p, max_defs=2)
        r = tapes_shm.Registry(p)
        r.counter("m.a")
        r.counter("m.b")
        with self.assertRaises(tapes_shm.TooManyMetricsError):
            r.counter("m.c")
        r.close()

    def test_bad_files_refused_clearly(self):
        cases = {
            "garbage": (None, "bad magic"),
            "version": (dict(version=4), "unsupported layout version 4"),
            "v1size": (dict(version=1, file_size=header(1) + 2 * geometry(2, 8, 4)[1] + 64), "file size field"),
            # Each version's header size is its own: 3 has the doorbell, 2 not.
            "v3header128": (dict(header_size=128), "header size 128, layout 3 has 640"),
            "v2header640": (dict(version=2, header_size=640), "header size 640, layout 2 has 128"),
            "reserved": (dict(reserved=b"\1" + b"\0" * 7), "reserved bytes"),
            "short": (dict(length=1000), "its header describes"),
            "slotsize": (dict(slot_size=64), "slot size"),
            "ringoff": (dict(ring_off=320), "ring offset"),
        }
        for name, (over, msg) in cases.items():
            p = self.path(name)
            if over is None:
                fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, b"not a tapes file " * 100)
                os.close(fd)
            else:
                make_file(p, **over)
            with self.assertRaisesRegex(tapes_shm.ShmError, msg, msg=name):
                tapes_shm.Registry(p).counter("b.c")
        p = self.path("waitzero")
        make_file(p)
        fd = os.open(p, os.O_RDWR)
        os.pwrite(fd, b"\1", 68)
        os.close(fd)
        with self.assertRaisesRegex(tapes_shm.ShmError, "reserved bytes 68..71"):
            tapes_shm.Registry(p).counter("b.c")
        p = self.path("mode")
        make_file(p)
        os.chmod(p, 0o640)
        with self.assertRaisesRegex(tapes_shm.ShmError, "0640 grants access to other users"):
            tapes_shm.Registry(p).counter("b.c")
        os.symlink(self.path("garbage"), self.path("link"))
        with self.assertRaisesRegex(tapes_shm.ShmError, "symbolic link"):
            tapes_shm.Registry(self.path("link")).counter("b.c")
        with self.assertRaisesRegex(tapes_shm.ShmError, "No such file"):
            tapes_shm.Registry(self.path("missing")).counter("b.c")
        os.mkfifo(self.path("fifo"))
        with self.assertRaisesRegex(tapes_shm.ShmError, "not a regular file"):
            tapes_shm.Registry(self.path("fifo")).counter("b.c")

    def test_unset_env_is_a_clear_error(self):
        old = os.environ.pop("TAPES_SHM", None)
        try:
            with self.assertRaisesRegex(tapes_shm.ShmError, "TAPES_SHM is not set"):
                tapes_shm.Registry().counter("e.c")
        finally:
            if old is not None:
                os.environ["TAPES_SHM"] = old

    def test_native_constants_match_spec(self):
        self.assertEqual(
            (_native.KIND_COUNTER, _native.KIND_GAUGE, _native.KIND_METER, _native.KIND_TIMER, _native.KIND_HISTOGRAM),
            (1, 2, 3, 4, 5))
        self.assertEqual((tapes_shm.SUM, tapes_shm.MIN, tapes_shm.MAX, tapes_shm.LAST, tapes_shm.PER_WORKER),
                         (1, 2, 3, 4, 5))
        self.assertEqual(_native.LAYOUT_VERSION, 3)  # and writes 1 and 2 too


if __name__ == "__main__":
    unittest.main()
