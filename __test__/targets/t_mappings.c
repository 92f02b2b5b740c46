/*
 * Mappings of every sharing/backing kind, with protections:
 *   anon private RW (patterned)              anon private PROT_NONE (patterned before protecting)
 *   anon private read-only (patterned)       anon with a hole (middle page unmapped)
 *   anon shared, shared with a child (fork)  file MAP_SHARED RW (page 3 written through the map)
 *   file MAP_PRIVATE RW (pages 2, 10 COW'd)  file MAP_PRIVATE read-only at file offset 16 KiB
 * Verification: each region at the same address with the same perms/offset/path in
 * /proc/self/maps and the same contents; PROT_NONE still inaccessible until re-protected; the hole
 * still unmapped; parent and child still share the anonymous shared pages (each sees the other's
 * write after restore); the shared file mapping still is the file's page cache (writes through the
 * map reach the file and file writes reach the map); private COW'd pages never reached the file.
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/wait.h>

/* the kernel's page size: 4 KiB, or 16/64 KiB on some arm64 kernels */
#define PAGE ((size_t)sysconf(_SC_PAGESIZE))
enum { RW, NONE, RO, HOLE_LO, HOLE_HI, SHANON, SHFILE, PRFILE, ROFILE, NREG };
static const char *const reg_name[NREG] = {"anon-rw", "anon-none", "anon-ro", "hole-lo", "hole-hi",
                                           "anon-shared", "file-shared", "file-private", "file-ro"};
static uint8_t *reg[NREG];
static char reg_maps[NREG][384];
static char g_shfile[PATH_MAX + 32], g_prfile[PATH_MAX + 32];

/* The maps line of the VMA holding addr, without the inode column (kept: it is the same file). */
static void maps_of(const void *addr, char *out, size_t size) {
    FILE *f = fopen("/proc/self/maps", "r");
    out[0] = 0;
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (unsigned long)addr >= lo &&
            (unsigned long)addr < hi) {
            char range[64], perms[8], off[32], dev[16], ino[32], path[300] = "";
            sscanf(line, "%63s %7s %31s %15s %31s %299[^\n]", range, perms, off, dev, ino, path);
            /* Shared anonymous memory shows as "/dev/zero (deleted)"; a restorer may back it with
             * a memfd, named after the original ("/memfd:/dev/zero (deleted)") or not at all
             * ("/memfd: (deleted)", CRIU's restore of an anonymous shared object). All are the same
             * anonymous object to the program, so the name of its backing is not compared. */
            if (strstr(path, "/dev/zero (deleted)") || !strcmp(path, "/memfd: (deleted)"))
                snprintf(path, sizeof path, "[shared anon]");
            snprintf(out, size, "%s %s %s %s", range, perms, off, path);
            break;
        }
    }
    fclose(f);
}

static int is_mapped(const void *addr) {
    unsigned char v;
    return mincore((void *)addr, PAGE, &v) == 0;
}

static int make_file(const char *path, size_t pages, uint32_t seed) {
    int fd = SYS(open(path, O_RDWR | O_CREAT | O_TRUNC, 0600));
    uint8_t *b = SYSP(malloc(pages * PAGE));
    for (size_t p = 0; p < pages; p++) tgt_fill(b + p * PAGE, PAGE, seed); /* same pattern per page */
    if (write(fd, b, pages * PAGE) != (ssize_t)(pages * PAGE)) tgt_die("write %s", path);
    free(b);
    return fd;
}

static int file_page_is(int fd, size_t page, uint32_t seed) {
    static uint8_t b[64 * 1024]; /* the largest page size */
    if (pread(fd, b, PAGE, (off_t)(page * PAGE)) != (ssize_t)PAGE) return 0;
    return tgt_check_fill(b, PAGE, seed) < 0;
}

static void check_shared_anon(int me_off, int peer_off, const char *peer) {
    uint8_t *sh = reg[SHANON];
    long off = tgt_check_fill(sh, 31 * PAGE, 43);
    if (off >= 0) FAIL("shared anon pattern differs at +%ld", off);
    /* Write our marker, then wait for the peer's: proves the pages are still one object. */
    memcpy(sh + 31 * PAGE + me_off, "MARKER!", 8);
    long long deadline = tgt_now_ms() + 2000;
    while (memcmp(sh + 31 * PAGE + peer_off, "MARKER!", 8) && tgt_now_ms() < deadline) tgt_sleep_ms(1);
    CHECK(!memcmp(sh + 31 * PAGE + peer_off, "MARKER!", 8),
          "%s's write to the shared anonymous page never showed up here", peer);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    const int prw = PROT_READ | PROT_WRITE, anon = MAP_PRIVATE | MAP_ANONYMOUS;
    reg[RW] = SYS(mmap(NULL, 64 * PAGE, prw, anon, -1, 0));
    tgt_fill(reg[RW], 64 * PAGE, 40);
    reg[NONE] = SYS(mmap(NULL, 16 * PAGE, prw, anon, -1, 0));
    tgt_fill(reg[NONE], 16 * PAGE, 41);
    SYS(mprotect(reg[NONE], 16 * PAGE, PROT_NONE));
    reg[RO] = SYS(mmap(NULL, 8 * PAGE, prw, anon, -1, 0));
    tgt_fill(reg[RO], 8 * PAGE, 42);
    SYS(mprotect(reg[RO], 8 * PAGE, PROT_READ));
    reg[HOLE_LO] = SYS(mmap(NULL, 3 * PAGE, prw, anon, -1, 0));
    reg[HOLE_HI] = reg[HOLE_LO] + 2 * PAGE;
    reg[HOLE_LO][0] = 0x5a;
    reg[HOLE_HI][0] = 0xa5;
    SYS(munmap(reg[HOLE_LO] + PAGE, PAGE));
    reg[SHANON] = SYS(mmap(NULL, 32 * PAGE, prw, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    tgt_fill(reg[SHANON], 31 * PAGE, 43);

    snprintf(g_shfile, sizeof g_shfile, "%s/shared.bin", tgt_ctl);
    snprintf(g_prfile, sizeof g_prfile, "%s/private.bin", tgt_ctl);
    int shfd = make_file(g_shfile, 64, 44);
    reg[SHFILE] = SYS(mmap(NULL, 64 * PAGE, prw, MAP_SHARED, shfd, 0));
    close(shfd);
    tgt_fill(reg[SHFILE] + 3 * PAGE, PAGE, 45);
    int prfd = make_file(g_prfile, 32, 47);
    reg[PRFILE] = SYS(mmap(NULL, 32 * PAGE, prw, MAP_PRIVATE, prfd, 0));
    tgt_fill(reg[PRFILE] + 2 * PAGE, PAGE, 48);
    tgt_fill(reg[PRFILE] + 10 * PAGE, PAGE, 48);
    reg[ROFILE] = SYS(mmap(NULL, 8 * PAGE, PROT_READ, MAP_PRIVATE, prfd, 4 * PAGE));
    close(prfd);

    for (int i = 0; i < NREG; i++) maps_of(reg[i], reg_maps[i], sizeof reg_maps[i]);

    int up[2];
    SYS(pipe(up));
    pid_t child = SYS(fork());
    if (child == 0) {
        tgt_role = "child";
        close(up[0]);
        close(up[1]);
        tgt_wait_verify(NULL);
        char now[384];
        maps_of(reg[SHANON], now, sizeof now);
        CHECK(!strcmp(now, reg_maps[SHANON]), "child: shared anon maps '%s' -> '%s'",
              reg_maps[SHANON], now);
        check_shared_anon(8, 0, "parent");
        tgt_publish_part();
        tgt_idle();
    }
    close(up[1]);
    close(up[0]);

    char extra[64];
    snprintf(extra, sizeof extra, "child=%d\n", child);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    for (int i = 0; i < NREG; i++) {
        char now[384];
        maps_of(reg[i], now, sizeof now);
        CHECK(!strcmp(now, reg_maps[i]), "%s: maps '%s' -> '%s'", reg_name[i], reg_maps[i], now);
    }
    long off;
    if ((off = tgt_check_fill(reg[RW], 64 * PAGE, 40)) >= 0) FAIL("anon-rw differs at +%ld", off);
    if ((off = tgt_check_fill(reg[RO], 8 * PAGE, 42)) >= 0) FAIL("anon-ro differs at +%ld", off);
    if (VSYS(mprotect(reg[NONE], 16 * PAGE, PROT_READ)) == 0)
        if ((off = tgt_check_fill(reg[NONE], 16 * PAGE, 41)) >= 0) FAIL("PROT_NONE region differs at +%ld", off);
    CHECK(reg[HOLE_LO][0] == 0x5a && reg[HOLE_HI][0] == 0xa5, "pages around the hole lost data");
    CHECK(!is_mapped(reg[HOLE_LO] + PAGE), "the hole got mapped");

    for (size_t p = 0; p < 64; p++) {
        uint32_t seed = p == 3 ? 45 : 44;
        if (tgt_check_fill(reg[SHFILE] + p * PAGE, PAGE, seed) >= 0) {
            FAIL("shared file mapping page %zu differs", p);
            break;
        }
    }
    for (size_t p = 0; p < 32; p++) {
        uint32_t seed = (p == 2 || p == 10) ? 48 : 47;
        if (tgt_check_fill(reg[PRFILE] + p * PAGE, PAGE, seed) >= 0) {
            FAIL("private file mapping page %zu differs", p);
            break;
        }
    }
    for (size_t p = 0; p < 8; p++)
        if (tgt_check_fill(reg[ROFILE] + p * PAGE, PAGE, 47) >= 0) {
            FAIL("read-only file mapping page %zu differs", p);
            break;
        }

    int sf = open(g_shfile, O_RDWR), pf = open(g_prfile, O_RDONLY);
    if (sf < 0 || pf < 0) {
        FAIL("reopen mapped files: %s", strerror(errno));
    } else {
        CHECK(file_page_is(sf, 3, 45), "shared.bin page 3 lost the write made through the map");
        tgt_fill(reg[SHFILE] + 4 * PAGE, PAGE, 46);
        CHECK(file_page_is(sf, 4, 46), "write through the shared map after restore missed the file");
        static uint8_t b[64 * 1024]; /* the largest page size */
        tgt_fill(b, PAGE, 49);
        CHECK(pwrite(sf, b, PAGE, 5 * PAGE) == (ssize_t)PAGE, "pwrite shared.bin");
        CHECK(tgt_check_fill(reg[SHFILE] + 5 * PAGE, PAGE, 49) < 0,
              "file write after restore did not reach the shared map");
        CHECK(file_page_is(pf, 2, 47) && file_page_is(pf, 10, 47),
              "private COW pages leaked into private.bin");
    }
    if (sf >= 0) close(sf);
    if (pf >= 0) close(pf);

    check_shared_anon(0, 8, "child");
    int st;
    CHECK(waitpid(child, &st, WNOHANG) == 0, "child %d gone", child);
    static const char *const roles[] = {"child"};
    tgt_collect_parts(roles, 1, 3000);
    tgt_publish_result();
    tgt_idle();
}
