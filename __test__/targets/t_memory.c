/*
 * Patterned memory in every kind of anonymous/private place, next to zero and untouched memory:
 * - heap (malloc, several MiB) with a pattern;
 * - an mmap region (huge pages off) split into: patterned pages, pages written and then zeroed,
 *   pages only read (mapped to the shared zero page), pages never touched, pages written then
 *   dropped with MADV_DONTNEED, and a patterned page made read-only;
 * - .data and .bss globals, and a patterned array on main's stack.
 * Verification: every pattern intact, zero regions zero, never-touched pages still not resident
 * (mincore), /proc/self/maps protections unchanged, and the region at the same address.
 */
#include "common.h"
#include <sys/mman.h>

#define PAGE 4096UL
#define HEAP_SIZE (6UL << 20)
#define REGION_PAGES 2048UL /* 8 MiB */

static uint64_t g_data[512] = {1, 2, 3, 4, 5, 6, 7, 8};
static uint8_t g_bss[256 * 1024];
static uint8_t *g_heap;
static uint8_t *g_region;

/* Layout of g_region, in pages. */
enum {
    R_PATTERN = 0, R_PATTERN_N = 300,      /* written with a pattern */
    R_ZEROED = 300, R_ZEROED_N = 100,      /* written, then zeroed */
    R_READONLY_TOUCH = 400, R_READ_N = 200, /* only read */
    R_UNTOUCHED = 600, R_UNTOUCHED_N = 1000, /* never touched */
    R_DROPPED = 1600, R_DROPPED_N = 100,   /* written, then MADV_DONTNEED */
    R_SPARSE = 1700, R_SPARSE_N = 340,     /* every 17th page written */
    R_RO = 2040, R_RO_N = 8,               /* patterned, then PROT_READ */
};

static void maps_line(const void *addr, char *out, size_t size) {
    FILE *f = fopen("/proc/self/maps", "r");
    out[0] = 0;
    if (!f) return;
    char line[512];
    unsigned long want = (unsigned long)addr;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && want >= lo && want < hi) {
            line[strcspn(line, "\n")] = 0;
            snprintf(out, size, "%s", line);
            break;
        }
    }
    fclose(f);
}

static char g_maps_rw[512], g_maps_ro[512];

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    uint8_t stack_buf[64 * 1024];

    g_heap = SYSP(malloc(HEAP_SIZE));
    tgt_fill(g_heap, HEAP_SIZE, 1);

    g_region = SYS(mmap(NULL, REGION_PAGES * PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    /* Huge pages would make a touched neighbour resident; keep residency page-exact. */
    SYS(madvise(g_region, REGION_PAGES * PAGE, MADV_NOHUGEPAGE));
    tgt_fill(g_region + R_PATTERN * PAGE, R_PATTERN_N * PAGE, 2);
    tgt_fill(g_region + R_ZEROED * PAGE, R_ZEROED_N * PAGE, 3);
    memset(g_region + R_ZEROED * PAGE, 0, R_ZEROED_N * PAGE);
    volatile uint8_t sink = 0;
    for (unsigned long p = 0; p < R_READ_N; p++) sink += g_region[(R_READONLY_TOUCH + p) * PAGE];
    (void)sink;
    tgt_fill(g_region + R_DROPPED * PAGE, R_DROPPED_N * PAGE, 4);
    SYS(madvise(g_region + R_DROPPED * PAGE, R_DROPPED_N * PAGE, MADV_DONTNEED));
    for (unsigned long p = 0; p < R_SPARSE_N; p += 17)
        tgt_fill(g_region + (R_SPARSE + p) * PAGE, PAGE, 100 + (uint32_t)p);
    tgt_fill(g_region + R_RO * PAGE, R_RO_N * PAGE, 5);
    SYS(mprotect(g_region + R_RO * PAGE, R_RO_N * PAGE, PROT_READ));

    for (int i = 8; i < 512; i++) g_data[i] = 0x1000000000000001ULL * (uint64_t)i;
    tgt_fill(g_bss + 4096, sizeof g_bss - 8192, 6); /* first and last page of .bss stay zero */
    tgt_fill(stack_buf, sizeof stack_buf, 7);

    maps_line(g_region, g_maps_rw, sizeof g_maps_rw);
    maps_line(g_region + R_RO * PAGE, g_maps_ro, sizeof g_maps_ro);

    unsigned char vec[R_UNTOUCHED_N];
    SYS(mincore(g_region + R_UNTOUCHED * PAGE, R_UNTOUCHED_N * PAGE, vec));
    for (int i = 0; i < R_UNTOUCHED_N; i++)
        if (vec[i] & 1) tgt_die("untouched page %d resident before dump", i);

    char extra[64];
    snprintf(extra, sizeof extra, "region=%p\n", (void *)g_region);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    long off;
    if ((off = tgt_check_fill(g_heap, HEAP_SIZE, 1)) >= 0) FAIL("heap pattern differs at +%ld", off);
    if ((off = tgt_check_fill(g_region + R_PATTERN * PAGE, R_PATTERN_N * PAGE, 2)) >= 0)
        FAIL("patterned pages differ at +%ld", off);
    if ((off = tgt_check_zero(g_region + R_ZEROED * PAGE, R_ZEROED_N * PAGE)) >= 0)
        FAIL("zeroed pages not zero at +%ld", off);
    if ((off = tgt_check_zero(g_region + R_READONLY_TOUCH * PAGE, R_READ_N * PAGE)) >= 0)
        FAIL("read-only-touched pages not zero at +%ld", off);
    if ((off = tgt_check_zero(g_region + R_DROPPED * PAGE, R_DROPPED_N * PAGE)) >= 0)
        FAIL("MADV_DONTNEED pages not zero at +%ld", off);
    for (unsigned long p = 0; p < R_SPARSE_N; p++) {
        uint8_t *pg = g_region + (R_SPARSE + p) * PAGE;
        long o = p % 17 == 0 ? tgt_check_fill(pg, PAGE, 100 + (uint32_t)p) : tgt_check_zero(pg, PAGE);
        if (o >= 0) {
            FAIL("sparse page %lu wrong at +%ld", p, o);
            break;
        }
    }
    if ((off = tgt_check_fill(g_region + R_RO * PAGE, R_RO_N * PAGE, 5)) >= 0)
        FAIL("read-only pages differ at +%ld", off);

    /* Untouched pages: content zero, and still not resident (nobody wrote them back). */
    if (VSYS(mincore(g_region + R_UNTOUCHED * PAGE, R_UNTOUCHED_N * PAGE, vec)) == 0) {
        int resident = 0;
        for (int i = 0; i < R_UNTOUCHED_N; i++) resident += vec[i] & 1;
        CHECK_EQ("untouched pages resident after restore", resident, 0);
    }
    if ((off = tgt_check_zero(g_region + R_UNTOUCHED * PAGE, R_UNTOUCHED_N * PAGE)) >= 0)
        FAIL("untouched pages not zero at +%ld", off);

    for (int i = 8; i < 512; i++)
        if (g_data[i] != 0x1000000000000001ULL * (uint64_t)i) {
            FAIL(".data word %d differs", i);
            break;
        }
    CHECK(g_data[0] == 1 && g_data[7] == 8, ".data initialisers lost");
    if ((off = tgt_check_zero(g_bss, 4096)) >= 0) FAIL(".bss first page not zero at +%ld", off);
    if ((off = tgt_check_fill(g_bss + 4096, sizeof g_bss - 8192, 6)) >= 0)
        FAIL(".bss pattern differs at +%ld", off);
    if ((off = tgt_check_zero(g_bss + sizeof g_bss - 4096, 4096)) >= 0)
        FAIL(".bss last page not zero at +%ld", off);
    if ((off = tgt_check_fill(stack_buf, sizeof stack_buf, 7)) >= 0)
        FAIL("stack pattern differs at +%ld", off);

    char now_rw[512], now_ro[512];
    maps_line(g_region, now_rw, sizeof now_rw);
    maps_line(g_region + R_RO * PAGE, now_ro, sizeof now_ro);
    CHECK(strcmp(now_rw, g_maps_rw) == 0, "maps changed: '%s' -> '%s'", g_maps_rw, now_rw);
    CHECK(strcmp(now_ro, g_maps_ro) == 0, "maps changed: '%s' -> '%s'", g_maps_ro, now_ro);

    /* Still writable where it was, still read-only where it was (a write there would fault). */
    g_region[R_PATTERN * PAGE] ^= 0xff;
    g_region[R_PATTERN * PAGE] ^= 0xff;
    tgt_publish_result();
    tgt_idle();
}
