// hostile misuses the tapes ABI in every way hostabi must survive. Each
// export returns what the host answered so the tests can check the status.
#define TAPES_IMPLEMENTATION
#include "tapes.h"

// define_raw passes any pointer and length to define.
__attribute__((export_name("define_raw"))) int32_t define_raw(uint32_t kind, uint32_t ptr, uint32_t len) {
    return tapes_define_n(kind, (const char *)(uintptr_t)ptr, len);
}

// batch_raw passes any pointer and count to batch.
__attribute__((export_name("batch_raw"))) int32_t batch_raw(uint32_t ptr, uint32_t n) {
    return tapes_batch((const tapes_record *)(uintptr_t)ptr, n);
}

__attribute__((export_name("define_name"))) int32_t define_name(uint32_t kind, const char *name) {
    return tapes_define(kind, name);
}

static char scratch[512];

__attribute__((export_name("scratch"))) char *scratch_ptr(void) { return scratch; }

// define_many defines n distinct counters m.0 .. m.<n-1> and returns how
// many succeeded before the first failure; the failure is in last_status.
static int32_t last_status;
__attribute__((export_name("last_status"))) int32_t get_last_status(void) { return last_status; }
__attribute__((export_name("define_many"))) int32_t define_many(int32_t n) {
    char name[32];
    for (int32_t i = 0; i < n; i++) {
        char digits[12];
        int d = 0;
        uint32_t v = (uint32_t)i;
        do { digits[d++] = (char)('0' + v % 10); v /= 10; } while (v);
        int k = 0;
        name[k++] = 'm'; name[k++] = '.'; name[k++] = 'n';
        while (d) name[k++] = digits[--d];
        name[k] = 0;
        int32_t st = tapes_define(TAPES_COUNTER, name);
        if (st < 0) { last_status = st; return i; }
    }
    last_status = 0;
    return n;
}

// corrupt_batch sends 5 records for counter id: records 1 and 3 are bad
// (kind byte 9, then a non-zero reserved byte); it returns the host's answer.
__attribute__((export_name("corrupt_batch"))) int32_t corrupt_batch(int32_t id) {
    tapes_record r[5];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 5; i++) { r[i].id = (uint32_t)id; r[i].kind = TAPES_COUNTER; r[i].value = 10; }
    r[1].kind = 9;
    r[3].reserved[1] = 1;
    return tapes_batch(r, 5);
}

// wrong_kind_batch sends a gauge record for counter id and an unknown id.
__attribute__((export_name("wrong_kind_batch"))) int32_t wrong_kind_batch(int32_t id) {
    tapes_record r[3];
    memset(r, 0, sizeof r);
    r[0].id = (uint32_t)id; r[0].kind = TAPES_GAUGE; r[0].value = tapes_f64_bits(1);
    r[1].id = 1000000; r[1].kind = TAPES_COUNTER; r[1].value = 1;
    r[2].id = (uint32_t)id; r[2].kind = TAPES_COUNTER; r[2].value = 1;
    return tapes_batch(r, 3);
}

// trap_mid buffers n counter increments and traps before any flush: the
// records die with the instance.
__attribute__((export_name("trap_mid"))) void trap_mid(int32_t id, int32_t n) {
    for (int32_t i = 0; i < n; i++) tapes_counter_add(id, 1);
    __builtin_trap();
}

// flush_then_trap sends n increments in one batch and then traps: the batch
// was applied by the host before the trap.
__attribute__((export_name("flush_then_trap"))) void flush_then_trap(int32_t id, int32_t n) {
    for (int32_t i = 0; i < n; i++) tapes_counter_add(id, 1);
    tapes_flush();
    __builtin_trap();
}

__attribute__((export_name("add"))) int32_t add(int32_t id, int64_t n) { return tapes_call_counter_add(id, n); }

__attribute__((export_name("spin"))) void spin(void) {
    volatile uint64_t x = 0;
    for (;;) x++;
}

// grow asks for pages more pages of memory and returns memory.grow's answer
// (-1 when refused).
__attribute__((export_name("grow"))) int32_t grow(int32_t pages) {
    return (int32_t)__builtin_wasm_memory_grow(0, (uint32_t)pages);
}

__attribute__((export_name("mem_pages"))) int32_t mem_pages(void) {
    return (int32_t)__builtin_wasm_memory_size(0);
}

__attribute__((export_name("timer"))) int32_t timer(int32_t id, int64_t ns) { return tapes_call_timer_ns(id, ns); }
__attribute__((export_name("gauge"))) int32_t gauge(int32_t id, double v) { return tapes_call_gauge_set(id, v); }
__attribute__((export_name("histogram"))) int32_t histogram(int32_t id, double v) { return tapes_call_histogram_update(id, v); }
__attribute__((export_name("meter"))) int32_t meter(int32_t id, int64_t n) { return tapes_call_meter_mark(id, n); }
