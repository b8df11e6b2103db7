"""The service of examples/single and examples/workers, in Python, for
gunicorn: routes /, /users/<id> and /fail, each with a timer and a 5xx
counter, a request meter, a summed in-flight gauge and a per-worker memory
gauge. Every gunicorn worker imports this module after the fork, so each
claims its own slot of the shm file (TAPES_SHM, set by tapes-host run) and
tapes-host serves one set of numbers for all of them.

    tapes-host run -workers 1 -- gunicorn -w 4 -b 127.0.0.1:8000 --chdir examples/python-gunicorn app:app
"""
import os

import tapes_shm as tapes  # code written for tapes 0.3 changes only this import

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


requests = tapes.meter("http.requests")
inflight = tapes.gauge("http.inflight", mode="sum")
tapes.gauge("process.rss_bytes", rss_bytes, mode="per-worker")  # sampled every second

ROUTES = {}


def route(prefix, name):
    latency = tapes.timer("http.%s.latency" % name)
    errors = tapes.counter("http.%s.errors" % name)

    def register(handler):
        @latency.time()
        def timed(environ, start_response, rest):
            status, body = handler(rest)
            if status.startswith("5"):
                errors.increment()
            start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]

        ROUTES[prefix] = timed
        return handler

    return register


@route("/users/", "users")
def users(rest):
    if not rest.isdigit():
        return "400 Bad Request", b"bad user id\n"
    return "200 OK", ("user %s (served by pid %d)\n" % (rest, os.getpid())).encode()


@route("/fail", "fail")
def fail(rest):
    return "500 Internal Server Error", b"something broke\n"


@route("/", "index")
def index(rest):
    if rest:
        return "404 Not Found", b"not found\n"
    return "200 OK", b"finished"


def app(environ, start_response):
    requests.mark()
    inflight.set(1)
    try:
        path = environ.get("PATH_INFO", "/")
        for prefix in ("/users/", "/fail", "/"):
            if path.startswith(prefix):
                return ROUTES[prefix](environ, start_response, path[len(prefix):])
    finally:
        inflight.set(0)
