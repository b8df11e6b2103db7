// ccmd is a command module (a program with main, run once through _start):
// it counts one run, flushes, and exits with 0, or with 3 when define fails.
#define TAPES_IMPLEMENTATION
#include "tapes.h"

int main(void) {
    int32_t runs = tapes_define(TAPES_COUNTER, "runs");
    int32_t other = tapes_define(TAPES_GAUGE, "other");
    if (runs < 0 || other < 0) return 3;
    tapes_counter_add(runs, 1);
    tapes_gauge_set(other, 1);
    return tapes_flush() == 0 ? 0 : 4;
}
