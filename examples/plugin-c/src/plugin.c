// plugin-c is an example tapes plugin written in C: a WebAssembly reactor
// that records every kind of metric through guest/c/tapes.h. See README.md
// for how to build it and run it in tapes-host.
#define TAPES_IMPLEMENTATION
#include "tapes.h"

#include <time.h>

static int32_t requests = -1, collections, bytes_in, latency, sizes, queue, handled_g;
static int32_t pending, handled;
static uint32_t seed = 1;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// Ids are defined once per instance (ids start at 0, so -1 means "not yet");
// every instance of the plugin gets the same ids for the same names.
static void setup(void) {
    if (requests >= 0) return;
    requests = tapes_define(TAPES_COUNTER, "requests");
    collections = tapes_define(TAPES_COUNTER, "collections");
    bytes_in = tapes_define(TAPES_METER, "bytes_in");
    latency = tapes_define(TAPES_TIMER, "latency");
    sizes = tapes_define(TAPES_HISTOGRAM, "payload_size");
    queue = tapes_define(TAPES_GAUGE, "queue_depth");
    handled_g = tapes_define(TAPES_GAUGE, "handled");
}

// handle is what a host calls per request: size is the payload size.
__attribute__((export_name("handle"))) int32_t handle(int32_t size) {
    setup();
    int64_t start = now_ns();
    tapes_counter_add(requests, 1);
    tapes_meter_mark(bytes_in, size);
    tapes_histogram_update(sizes, (double)size);
    pending++;
    handled++;
    tapes_gauge_set(queue, (double)pending);
    tapes_gauge_set(handled_g, (double)handled);
    tapes_timer_ns(latency, now_ns() - start);
    return 0;
}

// tapes_collect is called by tapes-host on its reporting interval: the
// plugin handles ten synthetic requests (sizes from a fixed pseudo-random
// sequence) and drains its queue.
__attribute__((export_name("tapes_collect"))) void collect(void) {
    setup();
    tapes_counter_add(collections, 1);
    for (int i = 0; i < 10; i++) {
        seed = seed * 1103515245u + 12345u;
        handle((int32_t)(seed >> 16) % 1000 + 1);
    }
    pending = 0;
    tapes_gauge_set(queue, 0);
}
