// runaway runs for as long as nothing stops it, in ways that only the
// deadline's checks can end (hostabi's runaway_test.go). It is built at
// -O0, so that fib stays a tree of calls without a loop.
#define TAPES_IMPLEMENTATION
#include "tapes.h"

// fib is the naive recursion: fib(90) takes about 10^19 calls, and no loop.
__attribute__((export_name("fib"))) int64_t fib(int32_t n) {
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

// batch_all grows memory to pages pages and then sends all of it as one
// batch, again and again: each call is one loop iteration to the guest's
// fuel, and millions of records to the host.
__attribute__((export_name("batch_all"))) int32_t batch_all(int32_t pages) {
    int32_t have = (int32_t)__builtin_wasm_memory_size(0);
    if (pages > have && __builtin_wasm_memory_grow(0, pages - have) < 0) {
        return -1;
    }
    uint32_t n = (uint32_t)__builtin_wasm_memory_size(0) * (65536 / sizeof(tapes_record));
    int32_t rejected = 0;
    for (;;) {
        rejected += tapes_batch((const tapes_record *)(uintptr_t)0, n);
    }
    return rejected;
}
