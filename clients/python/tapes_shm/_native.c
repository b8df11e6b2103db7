/*
 * tapes_shm._native: the record path of the tapes shm worker client for
 * CPython.
 *
 * Python's mmap and struct modules have no compare-and-swap, and a ctypes
 * path costs 1.2-2.5 us per event; here one event is one C call: claim an
 * index in the ring (CAS on reserve), wake a sleeping host, store the value,
 * commit the record with a release store. Everything below follows
 * docs/shm-layout.md; section 1 holds every number of the layout and
 * section 2 every protocol step, each a small function named after the
 * spec's section, so that a change of the spec is a change in one place.
 *
 * Threads: every function here runs with the GIL held and never releases
 * it, but the atomics are those the spec asks for anyway (threads of one
 * worker race on reserve in the spec's model, and a future free-threaded
 * build must not silently break).
 *
 * Fork: a pthread_atfork child handler bumps fork_epoch; a client is
 * attached to a slot only while its attach_epoch equals fork_epoch, so the
 * first call in a forked child finds it detached and claims a fresh slot
 * (re-publishing this process's definitions with the same ids) before it
 * writes anything. A forked child never writes into its parent's slot.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if !defined(__linux__)
#error "tapes_shm needs Linux: the host is woken with futex(2) and liveness uses /proc/<pid>/stat"
#endif
#include <linux/futex.h>
#include <sys/syscall.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tapes_shm supports little-endian machines only: the shm file is little-endian and records are written with native stores"
#endif
#if !defined(__ATOMIC_SEQ_CST)
#error "tapes_shm needs a compiler with the __atomic builtins (GCC >= 4.7 or clang)"
#endif
_Static_assert(sizeof(void *) == 8, "tapes_shm needs a 64-bit machine: 64-bit fields of the shm file are accessed atomically");
_Static_assert(__atomic_always_lock_free(8, 0), "tapes_shm needs lock-free 64-bit atomics: they are shared with other processes");

/* ======================================================================
 * 1. Layout (docs/shm-layout.md, "File", "Header", "Slot", "Definition
 *    entry", "Ring record"). Every offset and size lives here.
 * ====================================================================== */

#define MAGIC "TAPESHM\0"
/* Layout versions this client writes: 3 (the doorbell, a 640-byte header),
 * and, for hosts built before it, 2 (CLAIMING state, claimWaits and refused
 * header words, a 64-byte trailer) and 1. */
#define LAYOUT_VERSION 3u
#define LAYOUT_VERSION_MIN 1u

#define HEADER_SIZE 128u    /* the two lines that hold the geometry: what a reader validates */
#define HEADER_SIZE_V1 128u /* versions 1 and 2 */
#define HEADER_SIZE_V3 640u /* v3: the two lines, then the doorbell (512 bytes) */
#define HDR_BELL 128        /* v3: u64[64], bit i%64 of word i/64 is slot i's (see ring_bell) */
#define HDR_MAGIC 0         /* 8 bytes */
#define HDR_VERSION 8       /* u32 */
#define HDR_HEADER_SIZE 12  /* u32 */
#define HDR_SLOTS 16        /* u32 */
#define HDR_RING_RECS 20    /* u32 */
#define HDR_MAX_DEFS 24     /* u32 */
#define HDR_DEF_SIZE 28     /* u32 */
#define HDR_SLOT_SIZE 32    /* u64 */
#define HDR_FILE_SIZE 40    /* u64 */
#define HDR_DEF_OFFSET 48   /* u32 */
#define HDR_RING_OFFSET 52  /* u32 */
#define HDR_RESERVED 56     /* 8 bytes, zero */
#define HDR_HOST_WAIT 64    /* u32: 1 while the host sleeps in FUTEX_WAIT */
#define HDR_WAIT_ZERO 68    /* v2: u32, zero */
#define HDR_CLAIM_WAITS 72  /* v2: u64, workers add 1 per claim scan that found no FREE slot */
#define HDR_REFUSED 80      /* v2: u64, workers add 1 when they give up for lack of a slot */
#define TRAILER_SIZE 64u    /* v2: after the last slot; the host's canary, workers never touch it */

#define CACHE_LINE 64u

/* Slot fields (offsets within a slot). */
#define SLOT_STATE 0        /* u64 pid<<32 | generation<<8 | state; CAS by worker and host */
#define SLOT_START 8        /* u64 worker's start time (clock ticks since boot) */
#define SLOT_RESERVED0 16   /* 48 bytes to 64, zero, worker's line */
#define SLOT_RESERVE 64     /* u64 records claimed (worker) */
#define SLOT_DROPPED 72     /* u64 events dropped because the ring was full (worker) */
#define SLOT_DEF_COUNT 80   /* u64 definitions published (worker) */
#define SLOT_RESERVED1 88   /* 40 bytes to 128, zero, worker's line */
#define SLOT_WORKER_LINE_END 128
#define SLOT_CONSUMER 192   /* u64 records released (host) */
#define SLOT_TAKING 200     /* u64 host's crash-recovery marker (host) */
#define SLOT_DEFS 256       /* definition table */

#define DEF_SIZE 272u
#define DEF_KIND 0          /* u8 */
#define DEF_MODE 1          /* u8 */
#define DEF_NAME_LEN 2      /* u8 */
#define DEF_ZERO 3          /* u8 */
#define DEF_GAUGE_SET 4     /* u32, atomic */
#define DEF_GAUGE_VALUE 8   /* u64 (f64 bits), atomic */
#define DEF_NAME 16         /* 256 bytes */
#define DEF_NAME_CAP 256u
#define MAX_NAME_LEN 255u

#define RECORD_SIZE 16u     /* wire.RecordSize: commit word (id u32 | kind u8 << 32), value u64 */
#define RECORD_VALUE 8

#define STATE_FREE 0u
#define STATE_ACTIVE 1u
#define STATE_CLOSED 2u
#define STATE_RECLAIMING 3u
#define STATE_CLAIMING 4u   /* v2: claimed, being scrubbed; the host binds nothing until ACTIVE */
#define SLOT_SCRUB_END 256  /* v2: a claim zeroes slot bytes 8..255 and the ring */
#define GEN_MASK 0xffffffu

#define MAX_SLOTS 4096u
#define MIN_RING_RECS 2u
#define MAX_RING_RECS (1u << 24)
#define MAX_DEFS_LIMIT (1u << 16)

/* wire.Kind and the gauge modes (docs/shm-layout.md, "Cross-process gauges"). */
#define KIND_COUNTER 1
#define KIND_GAUGE 2
#define KIND_METER 3
#define KIND_TIMER 4
#define KIND_HISTOGRAM 5
#define MODE_SUM 1
#define MODE_MIN 2
#define MODE_MAX 3
#define MODE_LAST 4
#define MODE_PER_WORKER 5

static inline uint64_t pack_state(uint32_t pid, uint32_t gen, uint32_t state) {
    return (uint64_t)pid << 32 | (uint64_t)(gen & GEN_MASK) << 8 | (uint64_t)(state & 0xff);
}
static inline uint32_t state_gen(uint64_t w) { return (uint32_t)(w >> 8) & GEN_MASK; }
static inline uint32_t state_code(uint64_t w) { return (uint32_t)(w & 0xff); }

/* wire.Word0: the commit word of a record. */
static inline uint64_t word0(uint32_t id, int kind) { return (uint64_t)id | (uint64_t)(uint8_t)kind << 32; }

static inline uint64_t align64(uint64_t x) { return (x + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE; }

typedef struct {
    uint32_t version, slots, ring_recs, max_defs;
    uint64_t header_size, def_offset, ring_offset, slot_size, file_size;
} geometry;

/* ======================================================================
 * Atomics, spelled as the spec's "Conventions" name them.
 * ====================================================================== */

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

static inline uint64_t load_acq(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void store_rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void store_sc(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline int cas_sc(uint64_t *p, uint64_t *expect, uint64_t v) {
    return __atomic_compare_exchange_n(p, expect, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static inline uint64_t *u64at(uint8_t *base, uint64_t off) { return (uint64_t *)(void *)(base + off); }
static inline uint32_t *u32at(uint8_t *base, uint64_t off) { return (uint32_t *)(void *)(base + off); }

/* ======================================================================
 * The client object.
 * ====================================================================== */

/* One definition this process made; kept in process memory so that every
 * slot the process claims (its first, or a fresh one after fork) gets the
 * same table with the same ids. */
typedef struct {
    uint8_t kind, mode, len;
    char name[MAX_NAME_LEN];
} localdef;

typedef struct {
    PyObject_HEAD
    /* Read by the record path; valid while attach_epoch == fork_epoch. */
    uint64_t attach_epoch;
    uint64_t *reserve, *consumer, *dropped;
    uint32_t *host_wait;
    uint64_t *bell, bit; /* v3: the doorbell word holding this slot's bit, and the bit; NULL before v3 */
    uint8_t *ring;
    uint64_t mask, size, limit; /* limit: claims below it fit (consumer + R at last look) */

    /* The mapping, whole file; kept until the object dies so that a handle
     * can never touch unmapped memory. */
    uint8_t *map;
    size_t map_len;
    geometry g;

    /* The slot this process holds. */
    long slot;
    uint32_t pid, gen;
    uint8_t *sbase;
    uint64_t *def_count;

    int closed;
    uint32_t pid_check;  /* events until the next getpid() check (see attach_for_record) */
    uint64_t lost;       /* events with no slot to go to (no free slot after fork, or closed) */
    uint64_t next_retry; /* lost count at which a failed claim is tried again */
    uint64_t retry_epoch; /* fork_epoch of the last claim attempt: a new process tries at once */

    localdef *defs;
    uint32_t ndefs, capdefs;
    PyObject *path;
    double slot_wait; /* seconds a definition waits for a free slot */
} Client;

/* Bumped in every forked child (pthread_atfork), so a client attached in the
 * parent is detached in the child. 64 bits: never wraps in practice, and
 * UINT64_MAX means "never attached". */
static uint64_t fork_epoch = 0;
#define DETACHED UINT64_MAX

static void on_fork_child(void) { fork_epoch++; }

static PyObject *ShmError;     /* tapes_shm.ShmError (OSError) */
static PyObject *NoSlotError;  /* tapes_shm.NoSlotError (ShmError) */
static PyObject *decorate_fn;  /* tapes_shm._decorate(timer, fn), set by the package */

/* ======================================================================
 * 2. Protocols (docs/shm-layout.md, "Protocols"), in the spec's order.
 * ====================================================================== */

/* --- Waking the host ---------------------------------------------------
 * After a claim CAS on reserve, after claiming the slot and after storing
 * defCount: if hostWait is 1, CAS it to 0 and FUTEX_WAKE (shared futex: the
 * word is in a file mapping, the kernel keys it by file and offset). The
 * load is sequentially consistent so that, with the preceding seq_cst
 * CAS/store, it cannot be ordered before it (the spec's "full barrier
 * between their store and their load"). */
static void wake_host(uint32_t *host_wait) {
    if (__atomic_load_n(host_wait, __ATOMIC_SEQ_CST) == 0)
        return;
    uint32_t one = 1;
    if (__atomic_compare_exchange_n(host_wait, &one, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, host_wait, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* --- The doorbell (version 3): after every change the host must see (the
 * claim, a defCount store, a record's claim CAS, the close CAS), OR this
 * slot's bit (a full barrier), then wake the host as above. A v3 host's
 * passes visit only the slots whose bit they take (docs/shm-layout.md, "The
 * doorbell"). On versions 1 and 2 only the wake-up: their header is 128
 * bytes, and byte 128 is the first slot's. */
static void ring_bell(Client *c) {
    if (c->bell)
        __atomic_fetch_or(c->bell, c->bit, __ATOMIC_SEQ_CST);
    wake_host(c->host_wait);
}

/* --- Header validation ("Header": a reader recomputes the geometry and
 * refuses the file unless every stored value matches). Returns NULL or an
 * error message. */
static const char *validate_header(const uint8_t *h, uint64_t size, geometry *g, char *buf, size_t buflen) {
    uint32_t v32;
    uint64_t v64;
    if (size < HEADER_SIZE)
        return "file shorter than its header (128 bytes)";
    if (memcmp(h + HDR_MAGIC, MAGIC, 8) != 0)
        return "not a tapes shm file (bad magic)";
    memcpy(&v32, h + HDR_VERSION, 4);
    if (v32 < LAYOUT_VERSION_MIN || v32 > LAYOUT_VERSION) {
        snprintf(buf, buflen, "unsupported layout version %u (this client writes %u to %u)", v32, LAYOUT_VERSION_MIN,
                 LAYOUT_VERSION);
        return buf;
    }
    g->version = v32;
    g->header_size = g->version >= 3 ? HEADER_SIZE_V3 : HEADER_SIZE_V1;
    memcpy(&v32, h + HDR_HEADER_SIZE, 4);
    if (v32 != g->header_size) {
        snprintf(buf, buflen, "corrupt header: header size %u, layout %u has %u", v32, g->version,
                 (unsigned)g->header_size);
        return buf;
    }
    memcpy(&v32, h + HDR_DEF_SIZE, 4);
    if (v32 != DEF_SIZE)
        return "corrupt header: definition size is not 272";
    memcpy(&g->slots, h + HDR_SLOTS, 4);
    memcpy(&g->ring_recs, h + HDR_RING_RECS, 4);
    memcpy(&g->max_defs, h + HDR_MAX_DEFS, 4);
    if (g->slots < 1 || g->slots > MAX_SLOTS)
        return "corrupt header: slots out of 1..4096";
    if (g->ring_recs < MIN_RING_RECS || g->ring_recs > MAX_RING_RECS || (g->ring_recs & (g->ring_recs - 1)) != 0)
        return "corrupt header: ring records not a power of two in 2..2^24";
    if (g->max_defs < 1 || g->max_defs > MAX_DEFS_LIMIT)
        return "corrupt header: definitions per worker out of 1..65536";
    g->def_offset = SLOT_DEFS;
    g->ring_offset = align64(SLOT_DEFS + (uint64_t)g->max_defs * DEF_SIZE);
    g->slot_size = align64(g->ring_offset + (uint64_t)g->ring_recs * RECORD_SIZE);
    g->file_size = g->header_size + (uint64_t)g->slots * g->slot_size + (g->version >= 2 ? TRAILER_SIZE : 0);
    memcpy(&v64, h + HDR_SLOT_SIZE, 8);
    if (v64 != g->slot_size)
        return "corrupt header: slot size does not match the geometry";
    memcpy(&v64, h + HDR_FILE_SIZE, 8);
    if (v64 != g->file_size)
        return "corrupt header: file size field does not match the geometry";
    memcpy(&v32, h + HDR_DEF_OFFSET, 4);
    if (v32 != g->def_offset)
        return "corrupt header: definition offset is not 256";
    memcpy(&v32, h + HDR_RING_OFFSET, 4);
    if (v32 != g->ring_offset)
        return "corrupt header: ring offset does not match the geometry";
    for (int i = HDR_RESERVED; i < HDR_HOST_WAIT; i++)
        if (h[i] != 0)
            return "corrupt header: reserved bytes 56..63 are not zero";
    if (g->version >= 2)
        for (int i = HDR_WAIT_ZERO; i < HDR_CLAIM_WAITS; i++)
            if (h[i] != 0)
                return "corrupt header: reserved bytes 68..71 are not zero";
    if (size < g->file_size) {
        snprintf(buf, buflen, "file is %llu bytes, its header describes %llu",
                 (unsigned long long)size, (unsigned long long)g->file_size);
        return buf;
    }
    return NULL;
}

/* startTime: field 22 of /proc/self/stat, counted after the last ')'. */
static uint64_t self_start_time(void) {
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    /* p is at the space before field 3; field 22 is 19 fields further. */
    for (int field = 2; field < 22; field++) {
        while (*p == ' ')
            p++;
        if (field == 21)
            break;
        while (*p && *p != ' ')
            p++;
        if (!*p)
            return 0;
    }
    return strtoull(p, NULL, 10);
}

/* --- Defining a metric (the write half): entry id completely with plain
 * stores. The caller publishes with publish_def_count. */
static void write_def(Client *c, uint32_t id) {
    const localdef *d = &c->defs[id];
    uint8_t *e = c->sbase + c->g.def_offset + (uint64_t)id * DEF_SIZE;
    memset(e, 0, DEF_SIZE);
    e[DEF_KIND] = d->kind;
    e[DEF_MODE] = d->mode;
    e[DEF_NAME_LEN] = d->len;
    memcpy(e + DEF_NAME, d->name, d->len);
}

/* ... then atomically store defCount (release; sequentially consistent, as
 * "Waking the host" asks), then wake the host so the metric appears before
 * its first event. */
static void publish_def_count(Client *c, uint64_t n) {
    store_sc(c->def_count, n);
    ring_bell(c);
}

/* --- Claiming a slot: scrub. A FREE slot is all zero by the spec, but a
 * FREE slot someone scribbled on lost events (the shmharden work), so
 * every worker-owned field is zeroed before use, after the claim CAS made
 * the slot ours (zeroing before it could wipe another claimant's data).
 * Host-owned fields (consumer, taking) are left to the host. Ring records
 * are zeroed only where non-zero, so untouched tmpfs pages stay holes. */
static void scrub_slot(Client *c) {
    uint8_t *s = c->sbase;
    if (c->g.version >= 2) {
        /* Version 2: the slot is CLAIMING, which the host leaves alone, so
         * everything between the state word and the definition table is
         * ours to zero, the host's indices included (plain stores: the
         * CAS to ACTIVE publishes them). */
        memset(s + SLOT_START, 0, SLOT_SCRUB_END - SLOT_START);
    }
    memset(s + SLOT_RESERVED0, 0, SLOT_RESERVE - SLOT_RESERVED0);
    store_sc(u64at(s, SLOT_DEF_COUNT), 0);
    store_rel(u64at(s, SLOT_RESERVE), 0);
    store_rel(u64at(s, SLOT_DROPPED), 0);
    memset(s + SLOT_RESERVED1, 0, SLOT_WORKER_LINE_END - SLOT_RESERVED1);
    uint64_t *ring = u64at(s, c->g.ring_offset);
    for (uint64_t i = 0; i < (uint64_t)c->g.ring_recs * 2; i++)
        if (__atomic_load_n(&ring[i], __ATOMIC_RELAXED) != 0)
            __atomic_store_n(&ring[i], 0, __ATOMIC_RELAXED);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* --- Claiming a slot (steps 2-5). Returns 0 on success, -1 if every slot
 * is taken. Needs no Python API, so the record path can call it. */
static int claim_slot(Client *c) {
    uint32_t pid = (uint32_t)getpid();
    /* Version 2 claims through CLAIMING (the host binds nothing until the
     * slot is ACTIVE); version 1 goes straight to ACTIVE. */
    uint32_t first = c->g.version >= 2 ? STATE_CLAIMING : STATE_ACTIVE;
    for (uint32_t i = 0; i < c->g.slots; i++) {
        uint8_t *sb = c->map + c->g.header_size + (uint64_t)i * c->g.slot_size;
        uint64_t *st = u64at(sb, SLOT_STATE);
        uint64_t w = load_acq(st);
        if (state_code(w) != STATE_FREE)
            continue;
        uint32_t gen = (state_gen(w) + 1) & GEN_MASK;
        if (!cas_sc(st, &w, pack_state(pid, gen, first)))
            continue; /* another worker won this one */
        c->slot = (long)i;
        c->pid = pid;
        c->gen = gen;
        c->sbase = sb;
        c->reserve = u64at(sb, SLOT_RESERVE);
        c->dropped = u64at(sb, SLOT_DROPPED);
        c->def_count = u64at(sb, SLOT_DEF_COUNT);
        c->consumer = u64at(sb, SLOT_CONSUMER);
        c->ring = sb + c->g.ring_offset;
        scrub_slot(c);
        /* The start time tells a reused pid from this process. */
        store_rel(u64at(sb, SLOT_START), self_start_time());
        c->bell = NULL;
        if (first == STATE_CLAIMING) {
            /* The CAS to ACTIVE is the release that publishes the scrub. */
            uint64_t want = pack_state(pid, gen, STATE_CLAIMING);
            if (!cas_sc(st, &want, pack_state(pid, gen, STATE_ACTIVE)))
                continue; /* taken from us while claiming (a host reset it): look further */
        }
        if (c->g.version >= 3) {
            c->bell = u64at(c->map, HDR_BELL + (uint64_t)(i / 64) * 8);
            c->bit = (uint64_t)1 << (i % 64);
        }
        /* Step 4: local copies, and the ring's pages faulted in by one call
         * (optional; an old kernel refuses it and nothing is lost). */
        c->limit = load_acq(c->consumer) + c->size;
        uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t a = ((uintptr_t)c->ring + pg - 1) & ~(pg - 1);
        uintptr_t b = ((uintptr_t)c->ring + c->size * RECORD_SIZE) & ~(pg - 1);
        if (a < b)
            (void)madvise((void *)a, b - a, MADV_POPULATE_WRITE);
        /* This process's definitions, same ids as in any earlier slot. */
        for (uint32_t id = 0; id < c->ndefs; id++)
            write_def(c, id);
        store_sc(c->def_count, c->ndefs);
        /* Ring the doorbell (v3; on v1 and v2 wake the host): the host binds the
         * slot now. */
        ring_bell(c);
        c->attach_epoch = fork_epoch;
        return 0;
    }
    /* Version 2, "Waiting for a slot": tell the host, which then looks for
     * dead and closed workers at once, and wake it. */
    if (c->g.version >= 2) {
        __atomic_fetch_add(u64at(c->map, HDR_CLAIM_WAITS), 1, __ATOMIC_SEQ_CST);
        wake_host(c->host_wait);
    }
    return -1;
}

/* A process made by a raw clone(2), without libc's fork, runs no atfork
 * handler: the pid tells. Checked on every slow path, and every
 * PID_CHECK_EVERY events on the record path (getpid is a system call). */
#define PID_CHECK_EVERY 4096
static void check_pid(Client *c) {
    c->pid_check = PID_CHECK_EVERY;
    if (c->attach_epoch == fork_epoch && c->pid != (uint32_t)getpid())
        c->attach_epoch = DETACHED;
}

/* attach makes sure the client holds a slot of this process: its first
 * claim, or a fresh one in a forked child. Returns 0 if attached. */
static int attach(Client *c) {
    check_pid(c);
    if (c->attach_epoch == fork_epoch)
        return 0;
    if (c->closed)
        return -1;
    /* A child inherits the parent's slot fields: forget them before
     * anything can write through them. */
    c->slot = -1;
    c->sbase = NULL;
    c->attach_epoch = DETACHED;
    return claim_slot(c);
}

/* attach_for_record is attach on the record path: without a slot the event
 * is lost and counted, and a failed claim is retried only every 1024 lost
 * events (each attempt reads every slot's state word). */
static int attach_for_record(Client *c) {
    if (!c->closed && (c->lost >= c->next_retry || c->retry_epoch != fork_epoch)) {
        c->retry_epoch = fork_epoch;
        if (attach(c) == 0)
            return 0;
        c->next_retry = c->lost + 1024;
    }
    c->lost++;
    return -1;
}

/* --- Recording an event: the commit protocol. w0 is the commit word
 * (id | kind<<32), v the value's 64 bits. */
static inline void put(Client *c, uint64_t w0, uint64_t v) {
    if (UNLIKELY(--c->pid_check == 0))
        check_pid(c);
    if (UNLIKELY(c->attach_epoch != fork_epoch) && attach_for_record(c) != 0)
        return;
    uint64_t r = load_acq(c->reserve);
    for (;;) {
        if (UNLIKELY(r >= c->limit)) {
            /* Acquire: the host's zeroing of released records is visible. */
            c->limit = load_acq(c->consumer) + c->size;
            if (r >= c->limit) {
                __atomic_fetch_add(c->dropped, 1, __ATOMIC_SEQ_CST); /* full: drop, never block */
                return;
            }
        }
        if (LIKELY(cas_sc(c->reserve, &r, r + 1)))
            break; /* claimed index r; on failure r holds the current value */
    }
    /* After the CAS, a full barrier. v3: ring unless the bit is already set
     * (a set bit will be taken by a host pass that reads reserve after it).
     * Whether to wake is decided here; the wake itself comes after the
     * commit, so that a woken host finds the record committed. */
    int wake = 0;
    if (c->bell) {
        if ((__atomic_load_n(c->bell, __ATOMIC_SEQ_CST) & c->bit) == 0) {
            __atomic_fetch_or(c->bell, c->bit, __ATOMIC_SEQ_CST);
            wake = __atomic_load_n(c->host_wait, __ATOMIC_SEQ_CST) != 0;
        }
    } else {
        wake = __atomic_load_n(c->host_wait, __ATOMIC_SEQ_CST) != 0;
    }
    uint8_t *p = c->ring + (r & c->mask) * RECORD_SIZE;
    __atomic_store_n(u64at(p, RECORD_VALUE), v, __ATOMIC_RELAXED); /* plain store of the value */
    __atomic_store_n(u64at(p, 0), w0, __ATOMIC_RELEASE);          /* commits the record */
    if (wake)
        wake_host(c->host_wait);
}

/* Gauges store the value in their definition entry (gaugeValue, then
 * gaugeSet = 1, both atomic) before recording, so a host that attaches later
 * knows this worker's current value. */
static void put_gauge(Client *c, uint32_t id, double v) {
    if (UNLIKELY(--c->pid_check == 0))
        check_pid(c);
    if (UNLIKELY(c->attach_epoch != fork_epoch) && attach_for_record(c) != 0)
        return;
    uint64_t bits;
    memcpy(&bits, &v, 8);
    uint8_t *e = c->sbase + c->g.def_offset + (uint64_t)id * DEF_SIZE;
    __atomic_store_n(u64at(e, DEF_GAUGE_VALUE), bits, __ATOMIC_RELEASE);
    uint32_t *set = u32at(e, DEF_GAUGE_SET);
    if (__atomic_load_n(set, __ATOMIC_ACQUIRE) == 0)
        __atomic_store_n(set, 1, __ATOMIC_RELEASE);
    put(c, word0(id, KIND_GAUGE), bits);
}

/* --- Closing: CAS state from ACTIVE to CLOSED (same pid and generation).
 * Committed events stay in the ring for the host. Returns 0, or -1 if the
 * slot was no longer ours (the state word is in *was). */
static int close_slot(Client *c, uint64_t *was) {
    c->closed = 1;
    check_pid(c); /* the CAS names a pid: never close the parent's slot */
    if (c->attach_epoch != fork_epoch) {
        c->attach_epoch = DETACHED;
        return 0; /* nothing claimed in this process */
    }
    c->attach_epoch = DETACHED;
    uint64_t *st = u64at(c->sbase, SLOT_STATE);
    uint64_t want = pack_state(c->pid, c->gen, STATE_ACTIVE);
    if (!cas_sc(st, &want, pack_state(c->pid, c->gen, STATE_CLOSED))) {
        *was = want;
        return -1;
    }
    ring_bell(c); /* v3: the host drains and frees the slot now (v1, v2: wakes it) */
    return 0;
}

/* ======================================================================
 * 3. Python objects.
 * ====================================================================== */

static PyTypeObject ClientType, CounterType, MeterType, TimerType, HistogramType, GaugeType, StopwatchType;

static void client_dealloc(Client *c) {
    if (c->map) {
        /* No handle can record any more (each holds a reference): give the
         * slot back now rather than when the process exits. */
        uint64_t was;
        if (!c->closed)
            (void)close_slot(c, &was);
        munmap(c->map, c->map_len);
    }
    PyMem_Free(c->defs);
    Py_XDECREF(c->path);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* Client(path): attach to the shm file a host created (docs/shm-layout.md,
 * "Claiming a slot", step 1). The slot itself is claimed on first use
 * (a definition or an event), so a process that only forks workers, or a
 * forked child that never records, takes no slot. */
/* A path naming an open descriptor (/proc/self/fd/N, /proc/<pid>/fd/N,
 * /dev/fd/N: how a sealed memfd reaches workers) is a kernel link to a file
 * already open, so it is followed; any other path is opened O_NOFOLLOW. */
static int is_fd_path(const char *p) {
    const char *rest;
    if (strncmp(p, "/dev/fd/", 8) == 0)
        rest = p + 8;
    else if (strncmp(p, "/proc/", 6) == 0) {
        const char *q = p + 6;
        if (strncmp(q, "self/", 5) == 0)
            q += 5;
        else {
            const char *d = q;
            while (*q >= '0' && *q <= '9')
                q++;
            if (q == d || *q != '/')
                return 0;
            q++;
        }
        if (strncmp(q, "fd/", 3) != 0)
            return 0;
        rest = q + 3;
    } else
        return 0;
    if (!*rest)
        return 0;
    for (; *rest; rest++)
        if (*rest < '0' || *rest > '9')
            return 0;
    return 1;
}

static int client_init(Client *c, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "slot_wait", NULL};
    PyObject *path = NULL;
    double slot_wait = 1.0;
    if (c->map) {
        PyErr_SetString(PyExc_RuntimeError, "tapes_shm: Client is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|d", kwlist, PyUnicode_FSConverter, &path, &slot_wait))
        return -1;
    c->slot_wait = slot_wait > 0 ? slot_wait : 0;
    const char *p = PyBytes_AS_STRING(path);
    c->path = PyUnicode_DecodeFSDefault(p);
    c->slot = -1;
    c->attach_epoch = DETACHED;
    c->pid_check = PID_CHECK_EVERY;
    c->retry_epoch = DETACHED;
    int fd = open(p, O_RDWR | O_CLOEXEC | (is_fd_path(p) ? 0 : O_NOFOLLOW));
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP)
            PyErr_Format(ShmError, "tapes_shm: %s is a symbolic link; the shm file is opened without following links", p);
        else
            PyErr_Format(ShmError, "tapes_shm: open %s: %s", p, strerror(e));
        Py_DECREF(path);
        return -1;
    }
    struct stat sb;
    uint8_t hdr[HEADER_SIZE];
    char buf[256];
    const char *err = NULL;
    if (fstat(fd, &sb) != 0)
        err = strerror(errno);
    else if (!S_ISREG(sb.st_mode))
        err = "not a regular file";
    else if (sb.st_uid != geteuid())
        err = "file owned by another user";
    else if (sb.st_mode & 077) {
        /* Other users could forge its metrics or truncate it under every
         * worker (SIGBUS): docs/shm-layout.md, "Who may open the file". */
        snprintf(buf, sizeof buf, "file mode %04o grants access to other users; the shm file must be 0600",
                 (unsigned)(sb.st_mode & 07777));
        err = buf;
    }
    else if (sb.st_size < (off_t)HEADER_SIZE)
        err = "file shorter than its header (128 bytes)";
    else if (pread(fd, hdr, HEADER_SIZE, 0) != (ssize_t)HEADER_SIZE)
        err = "reading the header failed";
    else
        err = validate_header(hdr, (uint64_t)sb.st_size, &c->g, buf, sizeof buf);
    if (err) {
        close(fd);
        PyErr_Format(ShmError, "tapes_shm: %s: %s", p, err);
        Py_DECREF(path);
        return -1;
    }
    void *m = mmap(NULL, c->g.file_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) {
        PyErr_Format(ShmError, "tapes_shm: mmap %s: %s", p, strerror(e));
        Py_DECREF(path);
        return -1;
    }
    Py_DECREF(path);
    c->map = m;
    c->map_len = c->g.file_size;
    c->host_wait = u32at(c->map, HDR_HOST_WAIT);
    c->size = c->g.ring_recs;
    c->mask = c->size - 1;
    return 0;
}

static int client_ready(Client *c) {
    if (!c->map) {
        PyErr_SetString(PyExc_RuntimeError, "tapes_shm: Client is not initialised");
        return -1;
    }
    return 0;
}

/* Claims a slot for this process now if it has none, raising on failure. */
static int client_attach_or_raise(Client *c) {
    if (client_ready(c) < 0)
        return -1;
    if (c->closed) {
        PyErr_SetString(ShmError, "tapes_shm: the client is closed");
        return -1;
    }
    /* "Waiting for a slot": scan, and while none is FREE sleep 0.5 ms
     * doubling to 20 ms (without the GIL) for up to slot_wait seconds. Only
     * definitions wait; the record path never does. */
    double waited = 0, pause = 0.0005;
    while (attach(c) != 0) {
        if (waited >= c->slot_wait) {
            if (c->g.version >= 2)
                __atomic_fetch_add(u64at(c->map, HDR_REFUSED), 1, __ATOMIC_SEQ_CST);
            PyErr_Format(NoSlotError,
                         "tapes_shm: no free worker slot in %U (%u slots, waited %.3g s; the host frees the slots of "
                         "exited workers)",
                         c->path, c->g.slots, c->slot_wait);
            return -1;
        }
        double d = pause < c->slot_wait - waited ? pause : c->slot_wait - waited;
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
        Py_BEGIN_ALLOW_THREADS
        nanosleep(&ts, NULL);
        Py_END_ALLOW_THREADS
        waited += d;
        pause = pause * 2 < 0.02 ? pause * 2 : 0.02;
        if (c->closed) {
            PyErr_SetString(ShmError, "tapes_shm: the client is closed");
            return -1;
        }
    }
    return 0;
}

/* define(kind, mode, name: bytes) -> id. The caller (the package) has
 * applied the name rule and the registry's conflict rules; here only the
 * bounds the file needs are checked. */
static PyObject *client_define(Client *c, PyObject *args) {
    int kind, mode;
    const char *name;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "iiy#", &kind, &mode, &name, &len))
        return NULL;
    if (client_ready(c) < 0)
        return NULL;
    if (kind < KIND_COUNTER || kind > KIND_HISTOGRAM)
        return PyErr_Format(PyExc_ValueError, "tapes_shm: invalid metric kind %d", kind);
    if (kind == KIND_GAUGE ? (mode < MODE_SUM || mode > MODE_PER_WORKER) : mode != 0)
        return PyErr_Format(PyExc_ValueError, "tapes_shm: invalid mode %d for kind %d", mode, kind);
    if (len < 1 || (size_t)len > MAX_NAME_LEN)
        return PyErr_Format(PyExc_ValueError, "tapes_shm: a name is 1..%u bytes, got %zd", MAX_NAME_LEN, len);
    if (c->ndefs >= c->g.max_defs)
        return PyErr_Format(PyExc_ValueError,
                            "tapes_shm: too many metrics: the shm file holds %u definitions per worker", c->g.max_defs);
    if (client_attach_or_raise(c) < 0)
        return NULL;
    if (c->ndefs == c->capdefs) {
        uint32_t cap = c->capdefs ? c->capdefs * 2 : 16;
        localdef *d = PyMem_Realloc(c->defs, (size_t)cap * sizeof *d);
        if (!d)
            return PyErr_NoMemory();
        c->defs = d;
        c->capdefs = cap;
    }
    uint32_t id = c->ndefs;
    localdef *d = &c->defs[id];
    d->kind = (uint8_t)kind;
    d->mode = (uint8_t)mode;
    d->len = (uint8_t)len;
    memcpy(d->name, name, (size_t)len);
    c->ndefs++;
    write_def(c, id);
    publish_def_count(c, c->ndefs);
    return PyLong_FromUnsignedLong(id);
}

static PyObject *client_attach_m(Client *c, PyObject *unused) {
    if (client_attach_or_raise(c) < 0)
        return NULL;
    return PyLong_FromLong(c->slot);
}

static PyObject *client_close(Client *c, PyObject *unused) {
    if (client_ready(c) < 0)
        return NULL;
    if (c->closed)
        Py_RETURN_NONE;
    uint64_t was = 0;
    if (close_slot(c, &was) != 0)
        return PyErr_Format(ShmError, "tapes_shm: slot %ld was taken from this worker (state %#llx)", c->slot,
                            (unsigned long long)was);
    Py_RETURN_NONE;
}

/* info() -> dict: this process's view of its slot, for tests and
 * debugging. Reads the slot's fields atomically. */
static PyObject *client_info(Client *c, PyObject *unused) {
    if (client_ready(c) < 0)
        return NULL;
    check_pid(c);
    int attached = c->attach_epoch == fork_epoch;
    if (!attached)
        return Py_BuildValue("{s:O,s:O,s:K,s:I,s:I,s:I,s:I,s:I}", "attached", Py_False, "closed",
                             c->closed ? Py_True : Py_False, "lost", (unsigned long long)c->lost, "slots", c->g.slots,
                             "ring_records", c->g.ring_recs, "max_defs", c->g.max_defs, "defs", c->ndefs, "version",
                             c->g.version);
    return Py_BuildValue("{s:O,s:O,s:l,s:I,s:I,s:K,s:K,s:K,s:K,s:K,s:K,s:I,s:I,s:I,s:I,s:I}", "attached", Py_True, "closed",
                         c->closed ? Py_True : Py_False, "slot", c->slot, "pid", c->pid, "generation", c->gen, "reserve",
                         (unsigned long long)load_acq(c->reserve), "dropped", (unsigned long long)load_acq(c->dropped),
                         "consumer", (unsigned long long)load_acq(c->consumer), "def_count",
                         (unsigned long long)load_acq(c->def_count), "state",
                         (unsigned long long)load_acq(u64at(c->sbase, SLOT_STATE)), "lost", (unsigned long long)c->lost,
                         "slots", c->g.slots, "ring_records", c->g.ring_recs, "max_defs", c->g.max_defs, "defs", c->ndefs,
                         "version", c->g.version);
}

static PyMethodDef client_methods[] = {
    {"define", (PyCFunction)client_define, METH_VARARGS,
     "define(kind, mode, name: bytes) -> id: publish a definition in this process's slot (claiming one if needed)."},
    {"attach", (PyCFunction)client_attach_m, METH_NOARGS, "attach() -> slot: claim a slot for this process now."},
    {"close", (PyCFunction)client_close, METH_NOARGS, "close(): mark the slot closed (ACTIVE -> CLOSED)."},
    {"info", (PyCFunction)client_info, METH_NOARGS, "info() -> dict: this process's slot fields."},
    {NULL}};

static PyMemberDef client_members[] = {{"path", T_OBJECT, offsetof(Client, path), READONLY, "the shm file"}, {NULL}};

static PyTypeObject ClientType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tapes_shm._native.Client",
    .tp_basicsize = sizeof(Client),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Client(path): a worker's attachment to a tapes shm file.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)client_init,
    .tp_dealloc = (destructor)client_dealloc,
    .tp_methods = client_methods,
    .tp_members = client_members,
};

/* --- Handles ----------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Client *c;
    uint64_t w0;
    uint32_t id;
    PyObject *name;
    PyObject *producer; /* gauges only */
    PyObject *weakrefs;
} Handle;

static PyObject *handle_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"client", "id", "name", NULL};
    PyObject *client, *name;
    unsigned int id;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!IU", kwlist, &ClientType, &client, &id, &name))
        return NULL;
    Client *c = (Client *)client;
    if (client_ready(c) < 0)
        return NULL;
    int kind = type == &CounterType     ? KIND_COUNTER
               : type == &MeterType     ? KIND_METER
               : type == &TimerType     ? KIND_TIMER
               : type == &HistogramType ? KIND_HISTOGRAM
                                        : KIND_GAUGE;
    if (id >= c->ndefs || c->defs[id].kind != kind)
        return PyErr_Format(PyExc_ValueError, "tapes_shm: id %u is not a definition of this kind", id);
    Handle *h = (Handle *)type->tp_alloc(type, 0);
    if (!h)
        return NULL;
    Py_INCREF(client);
    h->c = c;
    h->id = id;
    h->w0 = word0(id, kind);
    Py_INCREF(name);
    h->name = name;
    return (PyObject *)h;
}

static int handle_traverse(Handle *h, visitproc visit, void *arg) {
    Py_VISIT(h->producer);
    return 0;
}

static int handle_clear(Handle *h) {
    Py_CLEAR(h->producer);
    return 0;
}

static void handle_dealloc(Handle *h) {
    PyObject_GC_UnTrack(h);
    if (h->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)h);
    handle_clear(h);
    Py_XDECREF(h->c);
    Py_XDECREF(h->name);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyObject *handle_repr(Handle *h) {
    return PyUnicode_FromFormat("<tapes_shm %s %R>", Py_TYPE(h)->tp_name + sizeof "tapes_shm._native." - 1, h->name);
}

/* An optional int argument n (default 1) of increment/decrement/mark. */
static int int_arg(PyObject *const *args, Py_ssize_t nargs, const char *fn, int64_t *n) {
    if (nargs == 0) {
        *n = 1;
        return 0;
    }
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument (%zd given)", fn, nargs);
        return -1;
    }
    if (!PyLong_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "%s(): n must be an int, not %.100s", fn, Py_TYPE(args[0])->tp_name);
        return -1;
    }
    long long v = PyLong_AsLongLong(args[0]);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *n = v;
    return 0;
}

static PyObject *counter_increment(Handle *h, PyObject *const *args, Py_ssize_t nargs) {
    int64_t n;
    if (int_arg(args, nargs, "increment", &n) < 0)
        return NULL;
    put(h->c, h->w0, (uint64_t)n);
    Py_RETURN_NONE;
}

static PyObject *counter_decrement(Handle *h, PyObject *const *args, Py_ssize_t nargs) {
    int64_t n;
    if (int_arg(args, nargs, "decrement", &n) < 0)
        return NULL;
    put(h->c, h->w0, (uint64_t)0 - (uint64_t)n);
    Py_RETURN_NONE;
}

static PyObject *meter_mark(Handle *h, PyObject *const *args, Py_ssize_t nargs) {
    int64_t n;
    if (int_arg(args, nargs, "mark", &n) < 0)
        return NULL;
    put(h->c, h->w0, (uint64_t)n);
    Py_RETURN_NONE;
}

static PyObject *histogram_update(Handle *h, PyObject *v) {
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    uint64_t bits;
    memcpy(&bits, &d, 8);
    put(h->c, h->w0, bits);
    Py_RETURN_NONE;
}

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A negative duration is not recorded: the host's Timer would ignore it,
 * and it would spend a ring slot (as in the Go client). */
static inline void put_duration(Handle *h, int64_t ns) {
    if (ns >= 0)
        put(h->c, h->w0, (uint64_t)ns);
}

/* update(seconds): tapes' Timer.update takes seconds. */
static PyObject *timer_update(Handle *h, PyObject *v) {
    double s = PyFloat_AsDouble(v);
    if (s == -1.0 && PyErr_Occurred())
        return NULL;
    if (!(s >= 0) || s > 9.2e9) /* NaN, negative, or beyond int64 nanoseconds */
        Py_RETURN_NONE;
    put_duration(h, (int64_t)llround(s * 1e9));
    Py_RETURN_NONE;
}

static PyObject *timer_update_ns(Handle *h, PyObject *v) {
    long long ns = PyLong_AsLongLong(v);
    if (ns == -1 && PyErr_Occurred())
        return NULL;
    put_duration(h, ns);
    Py_RETURN_NONE;
}

typedef struct {
    PyObject_HEAD
    Handle *timer;
    int64_t start;
} Stopwatch;

/* A few stopwatches are kept for reuse: `with t.time():` creates and frees
 * one per block, and the allocator's round trip is a measurable part of a
 * block that costs ~150 ns in all. Guarded by the GIL, like everything. */
#define STOPWATCH_FREELIST 16
static Stopwatch *stopwatch_free[STOPWATCH_FREELIST];
static int stopwatch_nfree;

/* time(): a started stopwatch, usable as a context manager (with
 * t.time(): ...), as a decorator (@t.time()), or stopped by hand (stop()).
 * The clock is read here and not again in __enter__: one clock read less
 * per block (~25-50 ns on a VM), and `with t.time():` enters at once. */
static PyObject *timer_time(Handle *h, PyObject *unused) {
    Stopwatch *s;
    if (stopwatch_nfree > 0) {
        s = stopwatch_free[--stopwatch_nfree];
        (void)PyObject_Init((PyObject *)s, &StopwatchType); /* public API: refcount 1 again */
    } else {
        s = PyObject_New(Stopwatch, &StopwatchType);
        if (!s)
            return NULL;
    }
    Py_INCREF(h);
    s->timer = h;
    s->start = now_ns();
    return (PyObject *)s;
}

static void stopwatch_dealloc(Stopwatch *s) {
    Py_DECREF(s->timer);
    if (stopwatch_nfree < STOPWATCH_FREELIST)
        stopwatch_free[stopwatch_nfree++] = s;
    else
        PyObject_Free(s);
}

static PyObject *stopwatch_enter(Stopwatch *s, PyObject *unused) {
    Py_INCREF(s);
    return (PyObject *)s;
}

static PyObject *stopwatch_exit(Stopwatch *s, PyObject *const *args, Py_ssize_t nargs) {
    put_duration(s->timer, now_ns() - s->start);
    Py_RETURN_FALSE;
}

/* stop() -> seconds: records the time since time() or __enter__. */
static PyObject *stopwatch_stop(Stopwatch *s, PyObject *unused) {
    int64_t d = now_ns() - s->start;
    put_duration(s->timer, d);
    return PyFloat_FromDouble((double)d / 1e9);
}

static PyObject *stopwatch_call(Stopwatch *s, PyObject *args, PyObject *kw) {
    PyObject *fn;
    if (kw && PyDict_GET_SIZE(kw)) {
        PyErr_SetString(PyExc_TypeError, "a timer's time() decorates one function and takes no keywords");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O:time() as a decorator", &fn))
        return NULL;
    if (!decorate_fn) {
        PyErr_SetString(PyExc_RuntimeError, "tapes_shm: import tapes_shm, not tapes_shm._native, to decorate");
        return NULL;
    }
    return PyObject_CallFunctionObjArgs(decorate_fn, (PyObject *)s->timer, fn, NULL);
}

static PyMethodDef stopwatch_methods[] = {
    {"__enter__", (PyCFunction)stopwatch_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))stopwatch_exit, METH_FASTCALL, NULL},
    {"stop", (PyCFunction)stopwatch_stop, METH_NOARGS, "stop() -> seconds: record the time elapsed since the start."},
    {NULL}};

static PyTypeObject StopwatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tapes_shm._native.Stopwatch",
    .tp_basicsize = sizeof(Stopwatch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A running timer: a context manager, a decorator, or stop().",
    .tp_dealloc = (destructor)stopwatch_dealloc,
    .tp_call = (ternaryfunc)stopwatch_call,
    .tp_methods = stopwatch_methods,
};

/* set(v): this worker's value of the gauge. On a function gauge (one with a
 * producer) it has no effect: the function wins, as in the registry. */
static PyObject *gauge_set(Handle *h, PyObject *v) {
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    if (!isfinite(d))
        return PyErr_Format(PyExc_ValueError, "tapes_shm: gauge %R: the value must be finite, got %R", h->name, v);
    if (h->producer == NULL || h->producer == Py_None)
        put_gauge(h->c, h->id, d);
    Py_RETURN_NONE;
}

/* _record(v): a sampled value of a function gauge. */
static PyObject *gauge_record(Handle *h, PyObject *v) {
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    if (!isfinite(d))
        return PyErr_Format(PyExc_ValueError, "tapes_shm: gauge %R: the value must be finite, got %R", h->name, v);
    put_gauge(h->c, h->id, d);
    Py_RETURN_NONE;
}

static PyMemberDef handle_members[] = {
    {"name", T_OBJECT, offsetof(Handle, name), READONLY, "the metric's name"},
    {"id", T_UINT, offsetof(Handle, id), READONLY, "the metric's id in this process's definition table"},
    {NULL}};

static PyMemberDef gauge_members[] = {
    {"name", T_OBJECT, offsetof(Handle, name), READONLY, "the metric's name"},
    {"id", T_UINT, offsetof(Handle, id), READONLY, "the metric's id in this process's definition table"},
    {"producer", T_OBJECT, offsetof(Handle, producer), 0, "the function sampled for the value, or None"},
    {NULL}};

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL

static PyMethodDef counter_methods[] = {
    {"increment", FASTCALL(counter_increment), "increment(n=1): add n."},
    {"decrement", FASTCALL(counter_decrement), "decrement(n=1): subtract n."},
    {NULL}};
static PyMethodDef meter_methods[] = {{"mark", FASTCALL(meter_mark), "mark(n=1): record n events."}, {NULL}};
static PyMethodDef timer_methods[] = {
    {"time", (PyCFunction)timer_time, METH_NOARGS, "time(): a stopwatch (context manager or decorator)."},
    {"update", (PyCFunction)timer_update, METH_O, "update(seconds): record one duration."},
    {"update_ns", (PyCFunction)timer_update_ns, METH_O, "update_ns(ns): record one duration in nanoseconds."},
    {NULL}};
static PyMethodDef histogram_methods[] = {{"update", (PyCFunction)histogram_update, METH_O, "update(v): record v."}, {NULL}};
static PyMethodDef gauge_methods[] = {
    {"set", (PyCFunction)gauge_set, METH_O, "set(v): this worker's value."},
    {"_record", (PyCFunction)gauge_record, METH_O, "record a sampled value (function gauges)."},
    {NULL}};

#define HANDLE_TYPE(var, pyname, doc, methods, members)                                                        \
    static PyTypeObject var = {                                                                                \
        PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tapes_shm._native." pyname,                                  \
        .tp_basicsize = sizeof(Handle),                                                                        \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,                                                   \
        .tp_doc = doc,                                                                                         \
        .tp_new = handle_new,                                                                                  \
        .tp_dealloc = (destructor)handle_dealloc,                                                              \
        .tp_traverse = (traverseproc)handle_traverse,                                                          \
        .tp_clear = (inquiry)handle_clear,                                                                     \
        .tp_repr = (reprfunc)handle_repr,                                                                      \
        .tp_weaklistoffset = offsetof(Handle, weakrefs),                                                       \
        .tp_methods = methods,                                                                                 \
        .tp_members = members,                                                                                 \
    }

HANDLE_TYPE(CounterType, "Counter", "A counter: increment(n=1), decrement(n=1).", counter_methods, handle_members);
HANDLE_TYPE(MeterType, "Meter", "A meter: mark(n=1).", meter_methods, handle_members);
HANDLE_TYPE(TimerType, "Timer", "A timer: time() as a context manager or decorator, update(seconds).", timer_methods,
            handle_members);
HANDLE_TYPE(HistogramType, "Histogram", "A histogram: update(v).", histogram_methods, handle_members);
HANDLE_TYPE(GaugeType, "Gauge", "A cross-process gauge: set(v), or a producer sampled in the background.",
            gauge_methods, gauge_members);

/* ======================================================================
 * 4. Module.
 * ====================================================================== */

static PyObject *set_decorate(PyObject *mod, PyObject *fn) {
    Py_INCREF(fn);
    Py_XSETREF(decorate_fn, fn);
    Py_RETURN_NONE;
}

static PyObject *fork_epoch_m(PyObject *mod, PyObject *unused) { return PyLong_FromUnsignedLongLong(fork_epoch); }

static PyMethodDef module_methods[] = {
    {"_set_decorate", set_decorate, METH_O, "set the function that turns a stopwatch into a decorator"},
    {"_fork_epoch", fork_epoch_m, METH_NOARGS, "how many forks this process's lineage went through (for tests)"},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "tapes_shm._native",
                                       "The C record path of tapes_shm (docs/shm-layout.md).", -1, module_methods};

PyMODINIT_FUNC PyInit__native(void) {
    PyTypeObject *types[] = {&ClientType, &CounterType, &MeterType, &TimerType, &HistogramType, &GaugeType, &StopwatchType};
    const char *names[] = {"Client", "Counter", "Meter", "Timer", "Histogram", "Gauge", "Stopwatch"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0)
            goto fail;
    }
    ShmError = PyErr_NewExceptionWithDoc("tapes_shm.ShmError", "The shm file cannot be used.", PyExc_OSError, NULL);
    NoSlotError = PyErr_NewExceptionWithDoc("tapes_shm.NoSlotError", "Every worker slot of the shm file is taken.",
                                            ShmError, NULL);
    if (!ShmError || !NoSlotError)
        goto fail;
    Py_INCREF(ShmError);
    Py_INCREF(NoSlotError);
    if (PyModule_AddObject(m, "ShmError", ShmError) < 0 || PyModule_AddObject(m, "NoSlotError", NoSlotError) < 0)
        goto fail;
    struct {
        const char *n;
        long v;
    } consts[] = {{"KIND_COUNTER", KIND_COUNTER}, {"KIND_GAUGE", KIND_GAUGE}, {"KIND_METER", KIND_METER},
                  {"KIND_TIMER", KIND_TIMER}, {"KIND_HISTOGRAM", KIND_HISTOGRAM}, {"MODE_SUM", MODE_SUM},
                  {"MODE_MIN", MODE_MIN}, {"MODE_MAX", MODE_MAX}, {"MODE_LAST", MODE_LAST},
                  {"MODE_PER_WORKER", MODE_PER_WORKER}, {"MAX_NAME_LEN", MAX_NAME_LEN},
                  {"LAYOUT_VERSION", LAYOUT_VERSION}};
    for (size_t i = 0; i < sizeof consts / sizeof *consts; i++)
        if (PyModule_AddIntConstant(m, consts[i].n, consts[i].v) < 0)
            goto fail;
    /* Registered once per process (the module is imported once); the handler
     * only bumps a counter, which is async-signal-safe. */
    static int registered;
    if (!registered) {
        if (pthread_atfork(NULL, NULL, on_fork_child) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "tapes_shm: pthread_atfork failed");
            goto fail;
        }
        registered = 1;
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
