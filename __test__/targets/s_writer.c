/*
 * The consistency target of dump --snapshot: a writer thread rewrites memory without pause while
 * the dump runs, and a copy that is not one instant of it shows.
 *
 * Usage: s_writer CTL [MIB [PROCS]]   (defaults 64 MiB, 1 process; PROCS-1 children do the same)
 *
 * Each process holds a private anonymous region of MIB MiB plus one MADV_DONTFORK page and one
 * MADV_WIPEONFORK page (a fork-based snapshot leaves these out or zeroes them: they must be
 * copied another way). Its writer thread walks them in passes: pass g stamps generation g into
 * the first and last word of every page in order, then counts the step in `steps` (one counter
 * of pages stamped since the start). At any instant, then, page i holds
 *     g(i) = steps / PAGES + (i < steps % PAGES)
 * and only the page being stamped may be one ahead (frozen between its stamp and the count).
 * Before stamping a page the writer checks that it holds g - 1 in both words, and remembers the
 * first page that does not. A restored process therefore checks every page of its restored
 * memory against its restored counter within one pass, before it rewrites it: a copy taken
 * while the writer ran (pages and counter from different moments) fails, a snapshot passes.
 *
 * Verification (CTL/verify): the writer must have made two more passes since (so every page was
 * checked after the restore) and found nothing wrong. Children report through parts.
 */
#include "common.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

static uint8_t *g_region;    /* PAGES - 2 pages */
static uint8_t *g_dontfork;  /* 1 page */
static uint8_t *g_wipeonfork; /* 1 page */
static size_t g_npages;      /* PAGES: the region's pages + the two */
static volatile uint64_t g_steps;
static volatile uint64_t g_bad;
static volatile uint64_t g_bad_page, g_bad_head, g_bad_tail, g_bad_want;

static uint64_t *page_at(size_t i) {
    if (i + 2 < g_npages) return (uint64_t *)(g_region + i * 4096);
    return (uint64_t *)(i + 2 == g_npages ? g_dontfork : g_wipeonfork);
}

static void *writer(void *arg) {
    (void)arg;
    for (;;) {
        uint64_t s = g_steps;
        size_t i = (size_t)(s % g_npages);
        uint64_t gen = s / g_npages + 1;
        uint64_t *p = page_at(i);
        uint64_t head = __atomic_load_n(&p[0], __ATOMIC_RELAXED), tail = __atomic_load_n(&p[511], __ATOMIC_RELAXED);
        if ((head != gen - 1 || tail != gen - 1) && g_bad++ == 0) {
            g_bad_page = i;
            g_bad_head = head;
            g_bad_tail = tail;
            g_bad_want = gen - 1;
        }
        __atomic_store_n(&p[0], gen, __ATOMIC_RELAXED);
        __atomic_store_n(&p[511], gen, __ATOMIC_RELAXED);
        __atomic_store_n(&g_steps, s + 1, __ATOMIC_RELEASE);
        /* a pass at a time at full speed, then a breath: the machine is shared */
        if (i + 1 == g_npages) tgt_sleep_ms(1);
    }
    return NULL;
}

static void verify(void) {
    uint64_t from = g_steps;
    long long deadline = tgt_now_ms() + 20000;
    while (g_steps < from + 2 * g_npages && tgt_now_ms() < deadline) tgt_sleep_ms(5);
    CHECK(g_steps >= from + 2 * g_npages, "the writer made %llu steps in 20 s, not two passes of %zu",
          (unsigned long long)(g_steps - from), g_npages);
    if (g_bad)
        FAIL("%llu pages held the wrong generation; first: page %llu of %zu held %llu/%llu, not %llu",
             (unsigned long long)g_bad, (unsigned long long)g_bad_page, g_npages, (unsigned long long)g_bad_head,
             (unsigned long long)g_bad_tail, (unsigned long long)g_bad_want);
    tgt_log("verified: %llu steps, %llu passes", (unsigned long long)g_steps, (unsigned long long)(g_steps / g_npages));
}

static void setup(long mib) {
    size_t n = (size_t)mib * 256;
    g_region = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_dontfork = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_wipeonfork = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_region == MAP_FAILED || g_dontfork == MAP_FAILED || g_wipeonfork == MAP_FAILED) tgt_die("mmap: %s", strerror(errno));
    if (madvise(g_dontfork, 4096, MADV_DONTFORK) || madvise(g_wipeonfork, 4096, MADV_WIPEONFORK)) tgt_die("madvise: %s", strerror(errno));
    g_npages = n + 2;
    pthread_t t;
    if (pthread_create(&t, NULL, writer, NULL)) tgt_die("pthread_create");
    /* ready once every page carries a stamp */
    while (g_steps < g_npages) tgt_sleep_ms(5);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    long mib = argc > 2 ? atol(argv[2]) : 64;
    long procs = argc > 3 ? atol(argv[3]) : 1;
    if (mib <= 0 || procs <= 0 || procs > 8) tgt_die("bad arguments");
    char roles[8][16];
    const char *role_ptrs[8];
    /* each child says here when its memory is stamped: the tree is ready only then */
    int set_up[2];
    if (pipe(set_up)) tgt_die("pipe: %s", strerror(errno));
    for (long k = 1; k < procs; k++) {
        snprintf(roles[k], sizeof roles[k], "child%ld", k);
        role_ptrs[k - 1] = roles[k];
        pid_t c = fork();
        if (c < 0) tgt_die("fork: %s", strerror(errno));
        if (c == 0) {
            tgt_role = roles[k];
            close(set_up[0]);
            setup(mib);
            if (write(set_up[1], "r", 1) != 1) tgt_die("write: %s", strerror(errno));
            close(set_up[1]);
            tgt_wait_verify(NULL);
            verify();
            tgt_publish_part();
            tgt_idle();
        }
    }
    close(set_up[1]);
    setup(mib);
    for (long k = 1; k < procs; k++) {
        char c;
        if (read(set_up[0], &c, 1) != 1) tgt_die("a child did not set up");
    }
    close(set_up[0]);
    char extra[128];
    snprintf(extra, sizeof extra, "pages=%zu\nprocs=%ld\n", g_npages, procs);
    tgt_ready(extra);
    tgt_wait_verify(NULL);
    verify();
    tgt_collect_parts(role_ptrs, (int)procs - 1, 30000);
    tgt_publish_result();
    tgt_idle();
}
