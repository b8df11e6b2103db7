"""tapes_shm: record metrics from Python worker processes into a tapes shm file.

tapes-host drains every worker's ring into one registry and serves the totals
(/metrics, /stats, StatsD, a JSON stream), so a service run as many forked
workers (gunicorn, tornado, multiprocessing) reports one set of numbers
without a broker. The method names are those of tapes 0.3's registry::

    import tapes_shm as tapes          # was: import tapes

    timer = tapes.timer('my.http.latency')
    with timer.time():
        ...
    @timer.time()
    def handler(): ...
    tapes.counter('my.http.requests').increment()
    tapes.meter('my.jobs').mark()
    tapes.histogram('my.sizes').update(1234)
    tapes.gauge('my.queue.depth', mode='sum').set(3)       # cross-process gauge
    tapes.gauge('my.pool.free', lambda: pool.free)         # sampled every second

The file is found through TAPES_SHM (tapes-host prints it, and sets it for
the workers it starts). Each process claims its own slot on first use; a
forked child claims a fresh one and never writes into its parent's. Recording
never blocks: when the ring is full (the host is behind or not running) the
event is dropped and counted, and tapes-host reports the drops under
tapes.host.shm.dropped.*. The byte-level contract is docs/shm-layout.md.
"""

import atexit
import functools
import inspect
import math
import os
import re
import threading
import weakref

try:
    from . import _native
except ImportError as e:  # pragma: no cover - exercised by hand
    raise ImportError(
        "tapes_shm: the C extension tapes_shm._native is not built (%s). Build it with "
        "`python3 setup.py build_ext --inplace` in clients/python; that needs a C compiler, "
        "the CPython headers and setuptools (Debian: apt-get install gcc python3-dev python3-setuptools)." % e
    ) from e

ShmError = _native.ShmError
NoSlotError = _native.NoSlotError
Client = _native.Client
Counter = _native.Counter
Meter = _native.Meter
Timer = _native.Timer
Histogram = _native.Histogram
Gauge = _native.Gauge

ENV_VAR = "TAPES_SHM"

# Gauge modes: how tapes-host combines the workers' values of one gauge. The
# first definition the host sees fixes a gauge's mode.
SUM = _native.MODE_SUM  # sum of the live workers' values (the default)
MIN = _native.MODE_MIN  # smallest live worker's value
MAX = _native.MODE_MAX  # largest live worker's value
LAST = _native.MODE_LAST  # the value drained most recently from a live worker
PER_WORKER = _native.MODE_PER_WORKER  # one gauge per live worker, <name>.pid-<pid>
DEFAULT_GAUGE_MODE = SUM

_MODES = {
    "sum": SUM,
    "min": MIN,
    "max": MAX,
    "last": LAST,
    "per-worker": PER_WORKER,
    "per_worker": PER_WORKER,
}
_MODE_NAMES = {SUM: "sum", MIN: "min", MAX: "max", LAST: "last", PER_WORKER: "per-worker"}

_KIND_NAMES = {
    _native.KIND_COUNTER: "counter",
    _native.KIND_GAUGE: "gauge",
    _native.KIND_METER: "meter",
    _native.KIND_TIMER: "timer",
    _native.KIND_HISTOGRAM: "histogram",
}


class MetricNameError(ValueError):
    """A name the registry would refuse: invalid, used by another kind, a
    prefix of another name (or the other way round), a gauge asked for with
    another mode, or one name too many for the file's definition table."""


class InvalidNameError(MetricNameError):
    pass


class KindConflictError(MetricNameError):
    pass


class PrefixConflictError(MetricNameError):
    pass


class ModeConflictError(MetricNameError):
    pass


class TooManyMetricsError(MetricNameError):
    pass


class ReservedNameError(MetricNameError):
    """Names equal to `tapes` or under `tapes.` are the host's own."""


_SEGMENT = re.compile(r"[A-Za-z0-9_-]+\Z")


def validate_name(name):
    """Raise InvalidNameError unless name obeys tapes' one name rule
    (wire.ValidateName): dot-separated, non-empty segments of [A-Za-z0-9_-],
    at most 255 bytes."""
    if not isinstance(name, str):
        raise InvalidNameError("invalid metric name: %r is not a str" % (name,))
    if name == "":
        raise InvalidNameError("invalid metric name: empty name")
    b = name.encode("utf-8")
    if len(b) > _native.MAX_NAME_LEN:
        raise InvalidNameError("invalid metric name: %d bytes, the limit is %d" % (len(b), _native.MAX_NAME_LEN))
    for seg in name.split("."):
        if seg == "":
            raise InvalidNameError("invalid metric name: %r has an empty segment" % name)
        if not _SEGMENT.match(seg) or not seg.isascii():
            raise InvalidNameError("invalid metric name: %r: segments allow A-Z a-z 0-9 _ -" % name)
    if name == "tapes" or name.startswith("tapes."):
        raise ReservedNameError("tapes_shm: %r: names under 'tapes' are reserved for the host's own metrics" % name)


def _mode(mode):
    if mode is None:
        return None
    if isinstance(mode, str):
        try:
            return _MODES[mode.lower()]
        except KeyError:
            raise ValueError("tapes_shm: unknown gauge mode %r (sum, min, max, last, per-worker)" % mode) from None
    if mode in _MODE_NAMES:
        return mode
    raise ValueError("tapes_shm: unknown gauge mode %r (sum, min, max, last, per-worker)" % (mode,))


def _decorate(timer, fn):
    """@timer.time(): time every call of fn (an async def function is timed
    until its coroutine finishes)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def timed_async(*args, **kwargs):
            with timer.time():
                return await fn(*args, **kwargs)

        return timed_async

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        with timer.time():
            return fn(*args, **kwargs)

    return timed


_native._set_decorate(_decorate)

# Every open registry, so that forked children can restart their samplers
# and exit closes their slots.
_registries = weakref.WeakSet()


class Registry:
    """A worker's metrics, recorded into the shm file at path (default:
    $TAPES_SHM). The file is opened when the first metric is asked for; the
    process claims a slot then, and a forked child claims its own on its
    first use. Handles are cached: asking twice for a name returns the same
    object, so keep them in module or class attributes for the fastest path.

    sample_interval is how often the producers of function gauges are called
    (seconds); flush() and close() also sample them. slot_wait is how long
    the first definition waits for a free slot when every slot is taken
    (the host frees those of exited workers), before NoSlotError; events
    never wait."""

    def __init__(self, path=None, sample_interval=1.0, slot_wait=1.0):
        self._path = path
        self._client = None
        self._lock = threading.RLock()
        self._handles = {}
        self._kinds = {}
        self._modes = {}  # declared by gauge_mode before definition
        self._prefixes = {}  # path prefix -> a name below it
        self._producers = []
        self._interval = float(sample_interval)
        self._slot_wait = float(slot_wait)
        self._sampler = None
        self._stop = threading.Event()
        self._closed = False
        self._pid = os.getpid()
        _registries.add(self)

    # -- tapes 0.3 registry methods ------------------------------------

    def counter(self, name):
        """A counter: increment(n=1), decrement(n=1)."""
        h = self._handles.get(name)
        if h is None or type(h) is not Counter:
            h = self._get(name, _native.KIND_COUNTER, Counter)
        return h

    def meter(self, name):
        """A meter (count and 1/5/15-minute rates): mark(n=1)."""
        h = self._handles.get(name)
        if h is None or type(h) is not Meter:
            h = self._get(name, _native.KIND_METER, Meter)
        return h

    def timer(self, name):
        """A timer: `with t.time():`, `@t.time()`, t.update(seconds)."""
        h = self._handles.get(name)
        if h is None or type(h) is not Timer:
            h = self._get(name, _native.KIND_TIMER, Timer)
        return h

    def histogram(self, name):
        """A histogram: update(value)."""
        h = self._handles.get(name)
        if h is None or type(h) is not Histogram:
            h = self._get(name, _native.KIND_HISTOGRAM, Histogram)
        return h

    def gauge(self, name, producer=None, mode=None):
        """A cross-process gauge. With a producer (tapes' form), the function
        is called every sample_interval and its value recorded; without one,
        call set(v). mode says how tapes-host combines the workers' values:
        'sum' (default), 'min', 'max', 'last' or 'per-worker' (or SUM, ...)."""
        mode = _mode(mode)
        with self._lock:
            h = self._handles.get(name)
            if type(h) is Gauge:
                have = self._kinds[name][1]
                if mode is not None and mode != have:
                    raise ModeConflictError(
                        "tapes_shm: gauge %r is %s, asked for %s" % (name, _MODE_NAMES[have], _MODE_NAMES[mode])
                    )
                return h
            if mode is None:
                mode = self._modes.get(name, DEFAULT_GAUGE_MODE)
            h = self._define(name, _native.KIND_GAUGE, mode, Gauge)
            if producer is not None:
                if not callable(producer):
                    raise TypeError("tapes_shm: gauge %r: producer must be callable" % name)
                h.producer = producer
                self._producers.append(h)
                self._sample_one(h)
                self._start_sampler()
            return h

    def gauge_mode(self, name, mode):
        """Declare the mode of the gauge called name before it is defined
        (for library code that calls gauge(name, producer) without one)."""
        mode = _mode(mode)
        if mode is None:
            raise ValueError("tapes_shm: gauge_mode needs a mode")
        with self._lock:
            k = self._kinds.get(name)
            if k is not None and k[0] == _native.KIND_GAUGE and k[1] != mode:
                raise ModeConflictError(
                    "tapes_shm: gauge %r is %s, asked for %s" % (name, _MODE_NAMES[k[1]], _MODE_NAMES[mode])
                )
            self._modes[name] = mode

    # -- tapes' DistributedRegistry, for code written against it ----------

    def connect(self):
        """Nothing to connect: the shm file needs no socket. Kept so code
        written for tapes' DistributedRegistry runs unchanged; opens the file
        now, so a wrong TAPES_SHM fails here rather than at the first metric."""
        self._open()
        return self

    # -- lifecycle -------------------------------------------------------

    def flush(self):
        """Sample every function gauge now. Other events need no flushing:
        each is visible to the host once recorded."""
        for h in list(self._producers):
            self._sample_one(h)

    def close(self):
        """Sample the function gauges a last time and mark this process's slot
        closed; the host drains what is left and frees it. Events recorded
        afterwards are discarded (and counted in info()['lost']). Called at
        exit for every registry."""
        if self._closed:
            return
        self._stop.set()
        s = self._sampler
        if s is not None and s.is_alive() and s is not threading.current_thread():
            s.join(timeout=5)
        if self._client is not None:
            # Only a process that holds a slot samples: a forked child that
            # never recorded must not claim a slot just to close it.
            if self._client.info()["attached"]:
                self.flush()
            self._closed = True
            self._client.close()
        self._closed = True

    def info(self):
        """This process's view of its slot (slot, pid, reserve, dropped, ...),
        or {'attached': False, ...} before the first metric."""
        if self._client is None:
            return {"attached": False, "closed": self._closed, "lost": 0}
        return self._client.info()

    @property
    def path(self):
        return self._client.path if self._client is not None else (self._path or os.environ.get(ENV_VAR))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- internals -------------------------------------------------------

    def _open(self):
        if self._client is None:
            with self._lock:
                self._open_locked()
        return self._client

    def _open_locked(self):
        if self._client is not None:
            return
        if self._closed:
            raise ShmError("tapes_shm: the registry is closed")
        path = self._path or os.environ.get(ENV_VAR)
        if not path:
            raise ShmError(
                "tapes_shm: %s is not set: start the workers with `tapes-host run`, or set it to the "
                "shm file tapes-host prints (TAPES_SHM=...)" % ENV_VAR
            )
        self._client = Client(path, self._slot_wait)

    def _get(self, name, kind, cls):
        with self._lock:
            h = self._handles.get(name)
            if h is not None:
                if type(h) is cls:
                    return h
                raise KindConflictError(
                    "tapes_shm: %r is a %s, asked for a %s" % (name, _KIND_NAMES[self._kinds[name][0]], _KIND_NAMES[kind])
                )
            return self._define(name, kind, 0, cls)

    def _define(self, name, kind, mode, cls):
        # Same checks, and same order, as the host's registry, so that a name
        # is refused here with a clear error instead of being rejected and
        # counted by the host.
        validate_name(name)
        k = self._kinds.get(name)
        if k is not None:
            raise KindConflictError("tapes_shm: %r is a %s, asked for a %s" % (name, _KIND_NAMES[k[0]], _KIND_NAMES[kind]))
        if name in self._prefixes:
            raise PrefixConflictError(
                "tapes_shm: %r is a path of %r and cannot be a metric too" % (name, self._prefixes[name])
            )
        parts = name.split(".")
        for i in range(1, len(parts)):
            p = ".".join(parts[:i])
            if p in self._kinds:
                raise PrefixConflictError("tapes_shm: %r is below the metric %r" % (name, p))
        self._open_locked()
        if len(self._kinds) >= self._client.info()["max_defs"]:
            raise TooManyMetricsError(
                "tapes_shm: too many metrics: the shm file holds %d per worker" % self._client.info()["max_defs"]
            )
        mid = self._client.define(kind, mode, name.encode("ascii"))
        h = cls(self._client, mid, name)
        self._kinds[name] = (kind, mode)
        for i in range(1, len(parts)):
            self._prefixes.setdefault(".".join(parts[:i]), name)
        self._handles[name] = h
        return h

    def _sample_one(self, h):
        try:
            v = float(h.producer())
        except Exception:  # a failing producer must not kill the sampler
            return
        if math.isfinite(v):
            h._record(v)

    def _start_sampler(self):
        if self._sampler is not None and self._sampler.is_alive():
            return
        self._stop = threading.Event()
        t = threading.Thread(target=self._sample_loop, args=(self._stop,), name="tapes_shm-sampler", daemon=True)
        self._sampler = t
        t.start()

    def _sample_loop(self, stop):
        while not stop.wait(self._interval):
            self.flush()

    def _after_fork_in_child(self):
        # Only the forking thread survives a fork: a lock another thread held
        # stays held, and the sampler is gone. The slot needs nothing here:
        # the C client sees the fork and claims a fresh slot on first use.
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._sampler = None
        if self._producers and not self._closed:
            self._start_sampler()


def _after_fork_in_child():
    for r in list(_registries):
        r._after_fork_in_child()


def _close_all():
    for r in list(_registries):
        try:
            r.close()
        except Exception:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all)

# tapes' DistributedRegistry needed connect() after fork and a separate
# aggregator process; here the host is tapes-host, and the name stays so
# that code written against it runs unchanged.
DistributedRegistry = Registry

_default = Registry()


def default_registry():
    """The registry behind the module-level functions ($TAPES_SHM)."""
    return _default


def counter(name):
    return _default.counter(name)


def meter(name):
    return _default.meter(name)


def timer(name):
    return _default.timer(name)


def histogram(name):
    return _default.histogram(name)


def gauge(name, producer=None, mode=None):
    return _default.gauge(name, producer, mode)


def gauge_mode(name, mode):
    return _default.gauge_mode(name, mode)


def flush():
    _default.flush()


def close():
    _default.close()


__all__ = [
    "Registry",
    "DistributedRegistry",
    "default_registry",
    "counter",
    "meter",
    "timer",
    "histogram",
    "gauge",
    "gauge_mode",
    "flush",
    "close",
    "validate_name",
    "ShmError",
    "NoSlotError",
    "MetricNameError",
    "InvalidNameError",
    "KindConflictError",
    "PrefixConflictError",
    "ModeConflictError",
    "TooManyMetricsError",
    "ReservedNameError",
    "SUM",
    "MIN",
    "MAX",
    "LAST",
    "PER_WORKER",
]
