/*
 * A target for pre-dumps of shared memory: a MAP_SHARED|MAP_ANONYMOUS region of MIB MiB shared
 * between the root and a forked child, plus a private region of the same size in the root. Both
 * processes keep rewriting RATE pages per second each (the root: private pages and even shared
 * pages in turn; the child: odd shared pages), every page holding a pattern of (region, index,
 * generation). The generations of the shared pages and the rewrite count of each writer live in
 * a second shared mapping, so they are dumped and restored with the pages.
 *
 * Usage: p_shdirty CTL [MIB [RATE]]   (defaults 16 MiB, 200 pages/s per process)
 *
 * Verification (root, on CTL/verify; the rewriting goes on afterwards): the child is paused (a
 * handshake in the shared control page), then every private and shared page must hold the pattern
 * of its current generation, the generations must add up to the rewrites done, and the child must
 * be alive, our child, and still see the root's writes (the region is still shared).
 */
#include "common.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

struct ctl_page {
    uint64_t rewrites[2]; /* shared-page rewrites by the root (0) and the child (1) */
    int pause_req;
    int paused;
    uint32_t gen[]; /* generation of each shared page */
};

static uint8_t *g_priv, *g_shared;
static uint32_t *g_priv_gen;
static struct ctl_page *g_ctl;
static size_t g_pages;
static uint64_t g_priv_rewrites;
static pid_t g_child;

#define SALT_PRIVATE 0x1111ULL
#define SALT_SHARED 0x2222ULL

static inline uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static void fill(uint8_t *region, uint64_t salt, size_t i, uint32_t gen) {
    uint64_t *w = (uint64_t *)(region + i * 4096);
    uint64_t seed = mix((salt << 48) ^ ((uint64_t)i << 32) ^ gen);
    for (int j = 0; j < 512; j++) w[j] = mix(seed + (uint64_t)j) | 1;
}

static long check(const uint8_t *region, uint64_t salt, size_t i, uint32_t gen) {
    const uint64_t *w = (const uint64_t *)(region + i * 4096);
    uint64_t seed = mix((salt << 48) ^ ((uint64_t)i << 32) ^ gen);
    for (int j = 0; j < 512; j++)
        if (w[j] != (mix(seed + (uint64_t)j) | 1)) return j;
    return -1;
}

/* Shared page `k`-th of a writer's half (parity 0: even pages, 1: odd), by a stride walk. */
static size_t shared_page(uint64_t walk, int parity) {
    size_t half = g_pages / 2;
    return ((size_t)((walk * 7919u + 13u) % half)) * 2 + (size_t)parity;
}

static void rewrite_shared(int who, uint64_t *walk) {
    size_t p = shared_page((*walk)++, who);
    uint32_t gen = __atomic_load_n(&g_ctl->gen[p], __ATOMIC_RELAXED) + 1;
    fill(g_shared, SALT_SHARED, p, gen);
    __atomic_store_n(&g_ctl->gen[p], gen, __ATOMIC_RELEASE);
    __atomic_add_fetch(&g_ctl->rewrites[who], 1, __ATOMIC_RELEASE);
}

static void rewrite_private(uint64_t *walk) {
    size_t p = (size_t)((*walk)++ * 7919u + 29u) % g_pages;
    g_priv_gen[p]++;
    fill(g_priv, SALT_PRIVATE, p, g_priv_gen[p]);
    g_priv_rewrites++;
}

/* RATE pages per second in 10 ms ticks; `step` does one rewrite. */
struct pacer {
    long long last, owed_milli;
};

static long due(struct pacer *pc, long rate) {
    long long now = tgt_now_ms();
    pc->owed_milli += (now - pc->last) * rate;
    pc->last = now;
    long n = (long)(pc->owed_milli / 1000);
    pc->owed_milli %= 1000;
    return n;
}

static void child_loop(long rate) {
    tgt_role = "writer";
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    uint64_t walk = 0;
    struct pacer pc = {tgt_now_ms(), 0};
    for (;;) {
        if (__atomic_load_n(&g_ctl->pause_req, __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&g_ctl->paused, 1, __ATOMIC_RELEASE);
            while (__atomic_load_n(&g_ctl->pause_req, __ATOMIC_ACQUIRE)) tgt_sleep_ms(1);
            __atomic_store_n(&g_ctl->paused, 0, __ATOMIC_RELEASE);
            pc.last = tgt_now_ms();
        }
        tgt_sleep_ms(10);
        for (long n = due(&pc, rate); n > 0; n--) rewrite_shared(1, &walk);
    }
}

static void verify(void) {
    tgt_nfailures = 0;
    tgt_failures[0] = 0;
    __atomic_store_n(&g_ctl->pause_req, 1, __ATOMIC_RELEASE);
    long long deadline = tgt_now_ms() + 5000;
    while (!__atomic_load_n(&g_ctl->paused, __ATOMIC_ACQUIRE) && tgt_now_ms() < deadline) tgt_sleep_ms(1);
    CHECK(__atomic_load_n(&g_ctl->paused, __ATOMIC_ACQUIRE), "the writer child did not pause within 5 s");

    uint64_t sum = 0;
    long bad = 0;
    for (size_t i = 0; i < g_pages; i++) {
        sum += g_priv_gen[i];
        long at = check(g_priv, SALT_PRIVATE, i, g_priv_gen[i]);
        if (at >= 0 && bad++ < 5) FAIL("private page %zu (gen %u): word %ld differs", i, g_priv_gen[i], at);
    }
    CHECK_EQ("private generations vs rewrites", sum, g_priv_rewrites);
    sum = 0;
    for (size_t i = 0; i < g_pages; i++) {
        uint32_t gen = __atomic_load_n(&g_ctl->gen[i], __ATOMIC_ACQUIRE);
        sum += gen;
        long at = check(g_shared, SALT_SHARED, i, gen);
        if (at >= 0 && bad++ < 10) FAIL("shared page %zu (gen %u): word %ld differs", i, gen, at);
    }
    if (bad > 10) FAIL("%ld pages differ in all", bad);
    uint64_t r0 = __atomic_load_n(&g_ctl->rewrites[0], __ATOMIC_ACQUIRE), r1 = __atomic_load_n(&g_ctl->rewrites[1], __ATOMIC_ACQUIRE);
    CHECK_EQ("shared generations vs rewrites", sum, r0 + r1);
    CHECK(r1 > 0, "the child never rewrote a shared page");
    int status;
    CHECK(waitpid(g_child, &status, WNOHANG) == 0, "the writer child %d is gone", (int)g_child);
    tgt_log("verified %zu+%zu pages, %llu private and %llu+%llu shared rewrites", g_pages, g_pages,
            (unsigned long long)g_priv_rewrites, (unsigned long long)r0, (unsigned long long)r1);
    __atomic_store_n(&g_ctl->pause_req, 0, __ATOMIC_RELEASE);
    tgt_publish_result();
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    long mib = argc > 2 ? atol(argv[2]) : 16;
    long rate = argc > 3 ? atol(argv[3]) : 200;
    if (mib <= 0) tgt_die("bad size %s", argv[2]);
    g_pages = (size_t)mib * 256;
    size_t len = g_pages * 4096;
    g_priv = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_shared = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    size_t ctl_len = (sizeof(struct ctl_page) + g_pages * sizeof(uint32_t) + 4095) & ~4095UL;
    g_ctl = mmap(NULL, ctl_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    g_priv_gen = calloc(g_pages, sizeof(uint32_t));
    if (g_priv == MAP_FAILED || g_shared == MAP_FAILED || g_ctl == MAP_FAILED || !g_priv_gen) tgt_die("mmap %ld MiB", mib);
    for (size_t i = 0; i < g_pages; i++) {
        fill(g_priv, SALT_PRIVATE, i, 0);
        fill(g_shared, SALT_SHARED, i, 0);
    }

    g_child = fork();
    if (g_child < 0) tgt_die("fork");
    if (g_child == 0) child_loop(rate);

    char extra[256];
    snprintf(extra, sizeof extra, "child=%d\nshared=%p\nprivate=%p\npages=%zu\nrate=%ld\n", (int)g_child,
             (void *)g_shared, (void *)g_priv, g_pages, rate);
    tgt_ready(extra);

    uint64_t walk_s = 0, walk_p = 0;
    struct pacer pc = {tgt_now_ms(), 0};
    int answered = 0;
    for (;;) {
        if (!tgt_ctl_exists("verify")) {
            answered = 0;
        } else if (!answered) {
            verify();
            answered = 1;
            pc.last = tgt_now_ms();
        }
        tgt_sleep_ms(10);
        for (long n = due(&pc, rate); n > 0; n--) {
            if (n & 1)
                rewrite_private(&walk_p);
            else
                rewrite_shared(0, &walk_s);
        }
    }
}
