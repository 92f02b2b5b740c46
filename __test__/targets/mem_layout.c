/*
 * Memory of every kind the page dump must get right, with the target's own description of it:
 *   anon      64 MiB private anonymous, patterned
 *   untouched  8 MiB never touched
 *   zero       4 MiB only read (the shared zero page)
 *   dontneed   4 MiB patterned, second half dropped with MADV_DONTNEED
 *   filecow    1 MiB private mapping of CTL/mem_file, every 4th page overwritten (COW'd)
 *   protnone   1 MiB patterned, then PROT_NONE
 *   shared     2 MiB MAP_SHARED|MAP_ANONYMOUS, shared with a child process, patterned
 * CTL/ready lists NAME_addr (hex), NAME_len and NAME_sum (checksum of the bytes as this process
 * sees them: "fnv1a32-over-u32-words:sum32", both hex), plus child=PID.
 * On CTL/verify it recomputes every checksum and checks that its tick counter kept moving.
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/prctl.h>

#define MIB (1UL << 20)
#define PAGE 4096UL

struct region {
    const char *name;
    uint8_t *addr;
    size_t len;
    char sum[32];
};

static struct region g_r[] = {
    {"anon", 0, 64 * MIB, ""},    {"untouched", 0, 8 * MIB, ""}, {"zero", 0, 4 * MIB, ""},
    {"dontneed", 0, 4 * MIB, ""}, {"filecow", 0, 1 * MIB, ""},   {"protnone", 0, 1 * MIB, ""},
    {"shared", 0, 2 * MIB, ""},
};
enum { ANON, UNTOUCHED, ZERO, DONTNEED, FILECOW, PROTNONE, SHARED, NREG };

static volatile uint64_t g_ticks;

static void checksum(const uint8_t *p, size_t len, char *out, size_t size) {
    const uint32_t *w = (const uint32_t *)p;
    uint32_t fnv = 0x811c9dc5u, sum = 0;
    for (size_t i = 0; i < len / 4; i++) {
        fnv = (fnv ^ w[i]) * 0x01000193u;
        sum += w[i];
    }
    snprintf(out, size, "%08x:%08x", fnv, sum);
}

static uint8_t *map_anon(size_t len, int flags) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) tgt_die("mmap %zu: %s", len, strerror(errno));
    /* Small pages only: the checks count 4 KiB pages. */
    madvise(p, len, MADV_NOHUGEPAGE);
    return p;
}

static void tick(void) { g_ticks++; }

int main(int argc, char **argv) {
    tgt_init(argc, argv);

    g_r[ANON].addr = map_anon(g_r[ANON].len, MAP_PRIVATE);
    tgt_fill(g_r[ANON].addr, g_r[ANON].len, 11);

    g_r[UNTOUCHED].addr = map_anon(g_r[UNTOUCHED].len, MAP_PRIVATE);

    g_r[ZERO].addr = map_anon(g_r[ZERO].len, MAP_PRIVATE);
    for (size_t i = 0; i < g_r[ZERO].len; i += PAGE) (void)*(volatile uint8_t *)(g_r[ZERO].addr + i);

    g_r[DONTNEED].addr = map_anon(g_r[DONTNEED].len, MAP_PRIVATE);
    tgt_fill(g_r[DONTNEED].addr, g_r[DONTNEED].len, 12);
    SYS(madvise(g_r[DONTNEED].addr + g_r[DONTNEED].len / 2, g_r[DONTNEED].len / 2, MADV_DONTNEED));

    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/mem_file", tgt_ctl);
    int fd = SYS(open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    uint8_t *buf = SYSP(malloc(g_r[FILECOW].len));
    tgt_fill(buf, g_r[FILECOW].len, 13);
    if (write(fd, buf, g_r[FILECOW].len) != (ssize_t)g_r[FILECOW].len) tgt_die("write mem_file");
    free(buf);
    void *fm = mmap(NULL, g_r[FILECOW].len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (fm == MAP_FAILED) tgt_die("mmap mem_file: %s", strerror(errno));
    close(fd);
    g_r[FILECOW].addr = fm;
    for (size_t i = 0; i < g_r[FILECOW].len; i += 4 * PAGE) tgt_fill(g_r[FILECOW].addr + i, PAGE, 14 + (uint32_t)i);
    /* Read every other page too, so file pages are present but not COW'd. */
    for (size_t i = PAGE; i < g_r[FILECOW].len; i += 2 * PAGE) (void)*(volatile uint8_t *)(g_r[FILECOW].addr + i);

    g_r[PROTNONE].addr = map_anon(g_r[PROTNONE].len, MAP_PRIVATE);
    tgt_fill(g_r[PROTNONE].addr, g_r[PROTNONE].len, 15);

    g_r[SHARED].addr = map_anon(g_r[SHARED].len, MAP_SHARED);
    pid_t child = SYS(fork());
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (;;) pause();
    }
    tgt_fill(g_r[SHARED].addr, g_r[SHARED].len, 16);

    for (int i = 0; i < NREG; i++) checksum(g_r[i].addr, g_r[i].len, g_r[i].sum, sizeof g_r[i].sum);
    SYS(mprotect(g_r[PROTNONE].addr, g_r[PROTNONE].len, PROT_NONE));

    char extra[2048];
    size_t n = (size_t)snprintf(extra, sizeof extra, "child=%d\n", (int)child);
    for (int i = 0; i < NREG; i++)
        n += (size_t)snprintf(extra + n, sizeof extra - n, "%s_addr=%lx\n%s_len=%zu\n%s_sum=%s\n", g_r[i].name,
                              (unsigned long)g_r[i].addr, g_r[i].name, g_r[i].len, g_r[i].name, g_r[i].sum);
    tgt_ready(extra);
    uint64_t ticks_at_ready = g_ticks;
    tgt_wait_verify(tick);

    CHECK(g_ticks > ticks_at_ready, "tick counter did not move (%llu)", (unsigned long long)g_ticks);
    VSYS(mprotect(g_r[PROTNONE].addr, g_r[PROTNONE].len, PROT_READ));
    for (int i = 0; i < NREG; i++) {
        char now[32];
        checksum(g_r[i].addr, g_r[i].len, now, sizeof now);
        CHECK(strcmp(now, g_r[i].sum) == 0, "%s changed: %s -> %s", g_r[i].name, g_r[i].sum, now);
    }
    tgt_publish_result();
    tgt_idle();
}
