/*
 * tapes.h: record tapes metrics from a WebAssembly guest (C, C++, or any
 * language that can include a C header, e.g. Zig's @cImport or Rust through
 * bindgen with static-inline wrappers).
 *
 * The host side is Go package github.com/tapes-go/tapes/hostabi; the ABI is
 * documented byte for byte in docs/guest-abi.md. The kind codes, status codes
 * and the 16-byte record below restate package wire (wire/wire.go) for C;
 * hostabi's tests parse this header and fail if a number here drifts.
 *
 * Build a reactor (a library the host calls into):
 *
 *   clang --target=wasm32-wasi -O2 -mexec-model=reactor -o plugin.wasm plugin.c
 *
 * Exactly one translation unit must define TAPES_IMPLEMENTATION before
 * including this header: it holds the event buffer and exports
 * "tapes_flush", which the host's plugin runner calls after every call into
 * the guest, so buffered events never wait longer than the call that made
 * them.
 *
 *   #define TAPES_IMPLEMENTATION
 *   #include "tapes.h"
 *
 *   static int32_t hits = -1;            // ids start at 0
 *   __attribute__((export_name("handle"))) void handle(void) {
 *       if (hits < 0) hits = tapes_define(TAPES_COUNTER, "hits");
 *       tapes_counter_add(hits, 1);      // buffered; flushed by the host
 *   }
 *
 * Two ways to record:
 *   tapes_counter_add(id, n) etc.    append a record to the buffer (a few ns);
 *                                    the buffer is sent in one host call when
 *                                    full, on tapes_flush(), and after every
 *                                    call the plugin runner makes.
 *   tapes_call_counter_add(id, n)    one host call per event (~35 ns), with
 *                                    its status returned at once.
 *
 * Not thread-safe: a wasm32-wasi reactor runs one call at a time, and the
 * host never calls one instance concurrently.
 */
#ifndef TAPES_H
#define TAPES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Metric kinds (wire.Kind). */
enum {
    TAPES_COUNTER = 1,
    TAPES_GAUGE = 2,
    TAPES_METER = 3,
    TAPES_TIMER = 4,
    TAPES_HISTOGRAM = 5
};

/* Status codes (wire.Status). Functions return 0 or a non-negative
 * result on success, one of these on failure. */
enum {
    TAPES_OK = 0,
    TAPES_ERR_MEMORY = -1,          /* pointer or length outside guest memory */
    TAPES_ERR_INVALID_NAME = -2,    /* name breaks the name rule */
    TAPES_ERR_INVALID_KIND = -3,    /* kind is not one of the five */
    TAPES_ERR_KIND_CONFLICT = -4,   /* name exists with another kind */
    TAPES_ERR_PREFIX_CONFLICT = -5, /* "a.b" beside "a.b.c" */
    TAPES_ERR_TOO_MANY_METRICS = -6,/* the plugin's metric cap is reached */
    TAPES_ERR_UNKNOWN_ID = -7,      /* id was never defined */
    TAPES_ERR_WRONG_KIND = -8,      /* id has another kind */
    TAPES_ERR_BAD_RECORD = -9,      /* batch record kind/reserved bytes bad */
    TAPES_ERR_BAD_VALUE = -10       /* negative timer duration */
};

#define TAPES_MAX_NAME_LEN 255
#define TAPES_RECORD_SIZE 16

/* One event, laid out exactly as wire.Record (wasm32 is little-endian). */
typedef struct tapes_record {
    uint32_t id;
    uint8_t kind;
    uint8_t reserved[3]; /* must be zero */
    uint64_t value;      /* int64 for counter/meter/timer-ns, double bits for histogram/gauge */
} tapes_record;

#ifdef __cplusplus
static_assert(sizeof(tapes_record) == TAPES_RECORD_SIZE, "tapes_record must be 16 bytes");
#else
_Static_assert(sizeof(tapes_record) == TAPES_RECORD_SIZE, "tapes_record must be 16 bytes");
#endif

#define TAPES_IMPORT(name) __attribute__((import_module("tapes"), import_name(name)))

/* The host functions. */
TAPES_IMPORT("define") int32_t tapes_define_n(uint32_t kind, const char *name, uint32_t name_len);
TAPES_IMPORT("counter_add") int32_t tapes_call_counter_add(int32_t id, int64_t n);
TAPES_IMPORT("meter_mark") int32_t tapes_call_meter_mark(int32_t id, int64_t n);
TAPES_IMPORT("timer_ns") int32_t tapes_call_timer_ns(int32_t id, int64_t ns);
TAPES_IMPORT("histogram_update") int32_t tapes_call_histogram_update(int32_t id, double v);
TAPES_IMPORT("gauge_set") int32_t tapes_call_gauge_set(int32_t id, double v);
TAPES_IMPORT("batch") int32_t tapes_batch(const tapes_record *records, uint32_t n);

/* tapes_define defines (or finds) the metric called name with the given
 * kind and returns its id (>= 0) or a negative TAPES_ERR_*. Ids are shared
 * by every instance of the plugin; defining the same name and kind again
 * returns the same id. */
static inline int32_t tapes_define(uint32_t kind, const char *name) {
    return tapes_define_n(kind, name, (uint32_t)strlen(name));
}

#ifndef TAPES_BUFFER_RECORDS
#define TAPES_BUFFER_RECORDS 1024
#endif

extern tapes_record tapes_buffer[TAPES_BUFFER_RECORDS];
extern uint32_t tapes_buffer_len;
/* Records the host rejected in flushes so far (bad ids, wrong kinds). */
extern uint32_t tapes_rejected;

/* tapes_flush sends the buffered records in one host call. It returns the
 * number of records the host rejected (0 when all were applied) or a
 * negative TAPES_ERR_*. */
static inline int32_t tapes_flush(void) {
    uint32_t n = tapes_buffer_len;
    if (n == 0) return 0;
    tapes_buffer_len = 0;
    int32_t r = tapes_batch(tapes_buffer, n);
    if (r > 0) tapes_rejected += (uint32_t)r;
    return r;
}

static inline void tapes_push(int32_t id, uint8_t kind, uint64_t bits) {
    if (tapes_buffer_len == TAPES_BUFFER_RECORDS) tapes_flush();
    tapes_record *r = &tapes_buffer[tapes_buffer_len++];
    r->id = (uint32_t)id;
    r->kind = kind;
    r->reserved[0] = r->reserved[1] = r->reserved[2] = 0;
    r->value = bits;
}

static inline uint64_t tapes_f64_bits(double v) {
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

/* Buffered recording: the id must come from tapes_define with that kind;
 * the host rejects (and counts) records whose id or kind is wrong. */
static inline void tapes_counter_add(int32_t id, int64_t n) { tapes_push(id, TAPES_COUNTER, (uint64_t)n); }
static inline void tapes_meter_mark(int32_t id, int64_t n) { tapes_push(id, TAPES_METER, (uint64_t)n); }
static inline void tapes_timer_ns(int32_t id, int64_t ns) { tapes_push(id, TAPES_TIMER, (uint64_t)ns); }
static inline void tapes_histogram_update(int32_t id, double v) { tapes_push(id, TAPES_HISTOGRAM, tapes_f64_bits(v)); }
static inline void tapes_gauge_set(int32_t id, double v) { tapes_push(id, TAPES_GAUGE, tapes_f64_bits(v)); }

#ifdef TAPES_IMPLEMENTATION
tapes_record tapes_buffer[TAPES_BUFFER_RECORDS];
uint32_t tapes_buffer_len;
uint32_t tapes_rejected;

/* Called by the host's plugin runner after each call into the guest. */
__attribute__((export_name("tapes_flush"))) int32_t tapes_flush_export(void) { return tapes_flush(); }
#endif

#ifdef __cplusplus
}
#endif

#endif /* TAPES_H */
