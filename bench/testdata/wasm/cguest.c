// cguest is the C guest of the wasm benchmarks: it records counter
// increments through guest/c/tapes.h (buffered) or with one host call each.
#define TAPES_IMPLEMENTATION
#include "tapes.h"

static int32_t id = -1, other = -1;

static void setup(void) {
    if (id < 0) id = tapes_define(TAPES_COUNTER, "bench.c.events");
    if (other < 0) other = tapes_define(TAPES_COUNTER, "bench.c.other");
}

__attribute__((export_name("record"))) void record(int32_t n) {
    setup();
    for (int32_t i = 0; i < n; i++) tapes_counter_add(id, 1);
}

// record_mixed records n increments alternating between two counters.
__attribute__((export_name("record_mixed"))) void record_mixed(int32_t n) {
    setup();
    for (int32_t i = 0; i < n; i += 2) {
        tapes_counter_add(id, 1);
        tapes_counter_add(other, 1);
    }
}

__attribute__((export_name("record_direct"))) void record_direct(int32_t n) {
    setup();
    for (int32_t i = 0; i < n; i++) tapes_call_counter_add(id, 1);
}

__attribute__((export_name("noop"))) void noop(void) {}
