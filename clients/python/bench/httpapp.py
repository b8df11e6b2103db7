"""The benchmark's WSGI app: a handler writing `finished` (the original
tapes benchmark's), timed per request by the library BENCH_VARIANT names:

    none    no metrics
    tapes   tapes_shm timer (one record in the worker's ring; tapes-host drains it)
    prom    prometheus_client Histogram (default buckets) in multiprocess mode
"""
import os

VARIANT = os.environ.get("BENCH_VARIANT", "none")
BODY = b"finished"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def untimed(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


if VARIANT == "none":
    app = untimed
elif VARIANT == "tapes":
    import tapes_shm

    latency = tapes_shm.timer("http.index.latency")

    def app(environ, start_response):
        with latency.time():
            start_response("200 OK", HEADERS)
            return [BODY]

elif VARIANT == "prom":
    from prometheus_client import Histogram

    latency = Histogram("http_index_latency_seconds", "request latency")

    def app(environ, start_response):
        with latency.time():
            start_response("200 OK", HEADERS)
            return [BODY]

else:
    raise SystemExit("httpapp: unknown BENCH_VARIANT %r" % VARIANT)
