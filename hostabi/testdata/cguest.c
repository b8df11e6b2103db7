// cguest records every kind of metric through guest/c/tapes.h, both buffered
// and with one host call per event. hostabi's tests check that the host
// registry holds exactly these values.
#define TAPES_IMPLEMENTATION
#include "tapes.h"

static int32_t c, g, m, t, h;
static int ready; // ids start at 0, so 0 cannot mean "not defined yet"

static int32_t setup(void) {
    if (ready) return 0;
    c = tapes_define(TAPES_COUNTER, "c.requests");
    g = tapes_define(TAPES_GAUGE, "c.temperature");
    m = tapes_define(TAPES_METER, "c.bytes");
    t = tapes_define(TAPES_TIMER, "c.latency");
    h = tapes_define(TAPES_HISTOGRAM, "c.size");
    if (c < 0) return c;
    if (g < 0) return g;
    if (m < 0) return m;
    if (t < 0) return t;
    if (h < 0) return h;
    ready = 1;
    return 0;
}

// record_all records, per call: counter +7, gauge 42.5, meter 6, timer 1 ms
// and 2 ms, histogram 1.5 and 2.5. It returns 0, or the first failure.
__attribute__((export_name("record_all"))) int32_t record_all(void) {
    int32_t st = setup();
    if (st) return st;
    tapes_counter_add(c, 3);
    tapes_gauge_set(g, 41.0);
    tapes_meter_mark(m, 5);
    tapes_timer_ns(t, 1000000);
    tapes_histogram_update(h, 1.5);
    if ((st = tapes_call_counter_add(c, 4))) return st;
    if ((st = tapes_call_meter_mark(m, 1))) return st;
    if ((st = tapes_call_timer_ns(t, 2000000))) return st;
    if ((st = tapes_call_histogram_update(h, 2.5))) return st;
    // buffered after the direct set 41.0 is still pending: the direct call
    // below is applied first, then the flush sets 41.0, then 42.5.
    if ((st = tapes_call_gauge_set(g, 40.0))) return st;
    tapes_gauge_set(g, 42.5);
    return 0;
}

// events records n counter increments of 1, buffered (the benchmark path).
__attribute__((export_name("events"))) void events(int32_t n) {
    for (int32_t i = 0; i < n; i++) tapes_counter_add(c, 1);
}

// events_direct records n counter increments with one host call each.
__attribute__((export_name("events_direct"))) void events_direct(int32_t n) {
    for (int32_t i = 0; i < n; i++) tapes_call_counter_add(c, 1);
}

__attribute__((export_name("setup"))) int32_t setup_export(void) { return setup(); }

__attribute__((export_name("pending"))) uint32_t pending(void) { return tapes_buffer_len; }
