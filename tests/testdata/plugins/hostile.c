// hostile.c: plugins that misbehave, one per ATTACK_* macro, for the attack
// tests in tests/pluginattack_test.go (built with clang --target=wasm32-wasi
// -O0). Each first records "before" with a direct host call, so a test can
// check that what a guest committed before it was killed reaches the host.
#define TAPES_IMPLEMENTATION
#include "tapes.h"

#include <string.h>
#include <unistd.h>

volatile long long sink;

static void mark_before(void) {
    static int32_t before = -1;
    if (before < 0) before = tapes_define(TAPES_COUNTER, "before");
    tapes_call_counter_add(before, 1);
}

// Unbounded recursion without a loop: f(d){f(d-1);f(d-1)}.
void rec(int d) {
    rec(d - 1);
    rec(d - 1);
}

// Plain recursion, bounded in depth (90) but not in time (2^90 calls).
long long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

#if defined(ATTACK_RECURSE) || defined(ATTACK_FIB) || defined(ATTACK_STDERR) || defined(ATTACK_BATCH)
__attribute__((export_name("tapes_collect"))) void collect(void) {
    mark_before();
#if defined(ATTACK_RECURSE)
    rec(1);
#elif defined(ATTACK_FIB)
    sink = fib(90);
#elif defined(ATTACK_BATCH)
    // A loop whose every iteration is one host call over all of memory:
    // a deadline counted in iterations would take minutes.
    uint32_t n = (uint32_t)(__builtin_wasm_memory_size(0) * 65536 / 16);
    for (;;) sink += tapes_batch((const tapes_record *)0, n);
#else
    static char line[4096];
    memset(line, 'x', sizeof line);
    line[sizeof line - 1] = '\n';
    for (;;) write(2, line, sizeof line);
#endif
}
#endif

#if defined(ATTACK_START_SPIN)
// A command plugin whose _start never ends.
int main(void) {
    mark_before();
    for (;;) sink++;
}
#endif
