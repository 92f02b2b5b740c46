/*
 * A target for pre-dumps and incremental dumps: a private anonymous region of MIB MiB where
 * every page holds a pattern derived from (page index, generation). The target keeps rewriting
 * RATE pages per second (the next page of a fixed stride walk each time, its generation bumped)
 * so memory changes between a pre-dump and the dump; RATE 0 leaves the region idle.
 *
 * Usage: p_dirty CTL [MIB [RATE]]   (defaults 64 MiB, 500 pages/s)
 *
 * Verification (on every CTL/verify, the rewriting goes on afterwards): every page holds the
 * pattern of its current generation, and the generations add up to the number of rewrites done.
 * A page restored from a stale parent image (or a generation table from one) breaks one of the
 * two.
 */
#include "common.h"

#include <sys/mman.h>

static uint8_t *g_region;
static size_t g_pages;
static uint32_t *g_gen;        /* generation per page */
static volatile uint64_t g_rewrites; /* rewrites done since setup */
static uint64_t g_walk;        /* position of the stride walk */
static long g_rate;

static inline uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static void fill_page(size_t i, uint32_t gen) {
    uint64_t *w = (uint64_t *)(g_region + i * 4096);
    uint64_t seed = mix(((uint64_t)i << 32) | gen);
    for (int j = 0; j < 512; j++) w[j] = mix(seed + (uint64_t)j) | 1;
}

static long check_page(size_t i, uint32_t gen) {
    const uint64_t *w = (const uint64_t *)(g_region + i * 4096);
    uint64_t seed = mix(((uint64_t)i << 32) | gen);
    for (int j = 0; j < 512; j++)
        if (w[j] != (mix(seed + (uint64_t)j) | 1)) return j;
    return -1;
}

/* The next page of a walk with a stride coprime to any power of two page count. */
static size_t next_page(void) {
    size_t p = (size_t)((g_walk * 7919u + 13u) % g_pages);
    g_walk++;
    return p;
}

static void rewrite(long n) {
    for (long k = 0; k < n; k++) {
        size_t p = next_page();
        g_gen[p]++;
        fill_page(p, g_gen[p]);
        g_rewrites++;
    }
}

/* Checks every page against its generation and publishes the verdict. */
static void verify(void) {
    tgt_nfailures = 0;
    tgt_failures[0] = 0;
    uint64_t sum = 0;
    long bad = 0;
    for (size_t i = 0; i < g_pages; i++) {
        sum += g_gen[i];
        long at = check_page(i, g_gen[i]);
        if (at >= 0 && bad++ < 5) FAIL("page %zu (gen %u): word %ld differs", i, g_gen[i], at);
    }
    if (bad > 5) FAIL("%ld pages differ in all", bad);
    CHECK_EQ("sum of generations vs rewrites", sum, g_rewrites);
    tgt_log("verified %zu pages, %llu rewrites", g_pages, (unsigned long long)g_rewrites);
    tgt_publish_result();
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    long mib = argc > 2 ? atol(argv[2]) : 64;
    g_rate = argc > 3 ? atol(argv[3]) : 500;
    if (mib <= 0) tgt_die("bad size %s", argv[2]);
    g_pages = (size_t)mib * 256;
    g_region = mmap(NULL, g_pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_region == MAP_FAILED) tgt_die("mmap %ld MiB", mib);
    g_gen = mmap(NULL, g_pages * sizeof(uint32_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_gen == MAP_FAILED) tgt_die("mmap generations");
    for (size_t i = 0; i < g_pages; i++) fill_page(i, 0);

    char extra[256];
    snprintf(extra, sizeof extra, "region=%p\npages=%zu\nrate=%ld\n", (void *)g_region, g_pages, g_rate);
    tgt_ready(extra);

    /* RATE pages per second in 10 ms ticks, carrying the remainder so low rates still write.
     * A verify request is answered and the rewriting goes on (a bench verifies between dumps);
     * the next request is taken once CTL/verify was removed. */
    long long last = tgt_now_ms();
    long long owed_milli = 0;
    int answered = 0;
    for (;;) {
        if (!tgt_ctl_exists("verify")) {
            answered = 0;
        } else if (!answered) {
            verify();
            answered = 1;
        }
        tgt_sleep_ms(10);
        long long now = tgt_now_ms();
        owed_milli += (now - last) * g_rate;
        last = now;
        if (owed_milli >= 1000) {
            rewrite((long)(owed_milli / 1000));
            owed_milli %= 1000;
        }
    }
}
