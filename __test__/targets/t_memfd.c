/*
 * memfds in each form a dump meets them:
 *   "tsd-memfd"   128 KiB, sealing allowed but no seal set; the first 64 KiB patterned, the rest a
 *                 hole; held as an fd at offset 1234 and mapped MAP_SHARED whole.
 *   "tsd-sealed"  4 KiB "sealed!", F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_WRITE|F_SEAL_SEAL, an fd only
 *                 (MFD_CLOEXEC).
 *   "tsd-maponly" 4 pages patterned, created without MFD_ALLOW_SEALING; its fd is closed, what is
 *                 left are a MAP_SHARED mapping of pages 1..3 (file offset 4 KiB) and a
 *                 MAP_PRIVATE mapping of page 0 written after mapping (a copy-on-write page).
 *   "tsd-empty"   an empty memfd held as an fd (no contents to store at all).
 *   "tsd-shared"  4 pages, created before a fork: parent and child hold the same open description
 *                 (the child moved its offset to 777) and both map it MAP_SHARED; the child also
 *                 reopened it read-only through /proc/self/fd (a second description of the inode).
 * Verification: contents through fds and mappings; offsets, names, fd flags; mappings still share
 * the memfd's pages both ways; the hole still a hole; seals kept and enforced (and sealing still
 * refused where it was); the private copy never reached the memfd; parent and child still share
 * one inode and one description (each sees the other's writes and offset).
 */
#include "common.h"
#include <sys/mman.h>

#define PAGE 4096UL
#define LEN (128 * 1024)
#define DATA (64 * 1024)

static uint8_t *g_map, *g_maponly, *g_private, *g_shmap;
static int g_fd, g_sealed, g_empty, g_shfd, g_shro;
static char g_maponly_maps[384], g_private_maps[384];

/* The maps line of the VMA holding addr, without the inode column. */
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
            snprintf(out, size, "%s %s %s %s", range, perms, off, path);
            break;
        }
    }
    fclose(f);
}

static void fd_link(int fd, char *out, size_t size) {
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, out, size - 1);
    out[n > 0 ? n : 0] = 0;
}

/* An fd for the object mapped at addr (the mapping may be all that is left of it). */
static int open_mapped(const void *addr, size_t len) {
    char path[96];
    snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)addr,
             (unsigned long)addr + len);
    return open(path, O_RDONLY);
}

static int page_is(int fd, size_t page, uint32_t seed) {
    static uint8_t b[PAGE];
    if (pread(fd, b, PAGE, (off_t)(page * PAGE)) != (ssize_t)PAGE) return 0;
    return tgt_check_fill(b, PAGE, seed) < 0;
}

/* Fills page p of a memfd with the pattern for (seed, p): every page tells where it belongs. */
static void fill_pages(uint8_t *p, size_t pages, uint32_t seed) {
    for (size_t i = 0; i < pages; i++) tgt_fill(p + i * PAGE, PAGE, seed + (uint32_t)i);
}

/* Waits up to 2 s for byte `at` of the shared memfd mapping to become `want`. */
static int shared_byte_becomes(size_t at, uint8_t want) {
    long long deadline = tgt_now_ms() + 2000;
    while (((volatile uint8_t *)g_shmap)[at] != want && tgt_now_ms() < deadline) tgt_sleep_ms(1);
    return g_shmap[at] == want;
}

static void check_shared_common(void) {
    CHECK(page_is(g_shfd, 0, 93) && tgt_check_fill(g_shmap, PAGE, 93) < 0, "tsd-shared page 0 (parent's) differs");
    CHECK(page_is(g_shfd, 1, 94) && tgt_check_fill(g_shmap + PAGE, PAGE, 94) < 0, "tsd-shared page 1 (child's) differs");
    char link[256];
    fd_link(g_shfd, link, sizeof link);
    CHECK(!strcmp(link, "/memfd:tsd-shared (deleted)"), "tsd-shared fd is '%s'", link);
}

static void child_verify(void) {
    check_shared_common();
    struct stat a, b;
    CHECK(fstat(g_shfd, &a) == 0 && fstat(g_shro, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev,
          "the reopened tsd-shared is another inode");
    CHECK_EQ("reopened tsd-shared access mode", fcntl(g_shro, F_GETFL) & O_ACCMODE, O_RDONLY);
    CHECK(page_is(g_shro, 1, 94), "tsd-shared through the read-only reopen differs");
    CHECK(write(g_shro, "x", 1) < 0 && errno == EBADF, "read-only reopen of tsd-shared accepts writes");
    /* Both ways through the one inode: our mapping -> parent, parent's mapping -> us. */
    g_shmap[2 * PAGE] = 0xc1;
    CHECK(shared_byte_becomes(3 * PAGE, 0xa1), "parent's write to tsd-shared never showed up in the child");
    tgt_publish_part();
}

static void check_main_memfd(void) {
    long off = tgt_check_fill(g_map, DATA, 90);
    if (off >= 0) FAIL("tsd-memfd mapping differs at +%ld", off);
    static uint8_t buf[LEN];
    CHECK(pread(g_fd, buf, DATA, 0) == DATA && tgt_check_fill(buf, DATA, 90) < 0, "tsd-memfd contents via fd differ");
    CHECK_EQ("tsd-memfd offset", lseek(g_fd, 0, SEEK_CUR), 1234);
    struct stat st;
    CHECK(fstat(g_fd, &st) == 0 && st.st_size == LEN, "tsd-memfd size %lld", (long long)st.st_size);
    /* Holes come back as holes: nothing after the data was written on restore. */
    errno = 0;
    CHECK(lseek(g_fd, DATA, SEEK_DATA) < 0 && errno == ENXIO, "tsd-memfd's hole holds data after %d", DATA);
    CHECK(pread(g_fd, buf, LEN - DATA, DATA) == LEN - DATA && tgt_check_zero(buf, LEN - DATA) < 0,
          "tsd-memfd's hole is not zero");
    lseek(g_fd, 1234, SEEK_SET);
    CHECK_EQ("tsd-memfd seals", fcntl(g_fd, F_GET_SEALS), 0);
    g_map[5] = 0x42;
    CHECK(pread(g_fd, buf, 8, 0) == 8 && buf[5] == 0x42, "mapping no longer shares tsd-memfd (map -> fd)");
    CHECK(pwrite(g_fd, "\x77", 1, 9) == 1 && g_map[9] == 0x77, "mapping no longer shares tsd-memfd (fd -> map)");
    char link[256];
    fd_link(g_fd, link, sizeof link);
    CHECK(!strcmp(link, "/memfd:tsd-memfd (deleted)"), "tsd-memfd fd is '%s'", link);
    CHECK(!(fcntl(g_fd, F_GETFD) & FD_CLOEXEC), "tsd-memfd became close-on-exec");
}

static void check_sealed(void) {
    const int seals = F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_WRITE | F_SEAL_SEAL;
    CHECK_EQ("tsd-sealed seals", fcntl(g_sealed, F_GET_SEALS), seals);
    CHECK(ftruncate(g_sealed, 8192) < 0 && errno == EPERM, "tsd-sealed could grow");
    CHECK(ftruncate(g_sealed, 0) < 0 && errno == EPERM, "tsd-sealed could shrink");
    CHECK(pwrite(g_sealed, "x", 1, 0) < 0 && errno == EPERM, "tsd-sealed accepted a write");
    CHECK(fcntl(g_sealed, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) < 0 && errno == EPERM, "tsd-sealed accepted another seal");
    char s[8] = {0};
    CHECK(pread(g_sealed, s, 7, 0) == 7 && !strcmp(s, "sealed!"), "tsd-sealed contents '%s'", s);
    CHECK(fcntl(g_sealed, F_GETFD) & FD_CLOEXEC, "tsd-sealed lost FD_CLOEXEC");
    CHECK_EQ("tsd-sealed access mode", fcntl(g_sealed, F_GETFL) & O_ACCMODE, O_RDWR);
}

static void check_empty(void) {
    struct stat st;
    CHECK(fstat(g_empty, &st) == 0 && st.st_size == 0, "tsd-empty is not empty (%lld bytes)", (long long)st.st_size);
    char link[256];
    fd_link(g_empty, link, sizeof link);
    CHECK(!strcmp(link, "/memfd:tsd-empty (deleted)"), "tsd-empty fd is '%s'", link);
    CHECK(pwrite(g_empty, "e", 1, 0) == 1, "tsd-empty refuses writes");
}

static void check_maponly(void) {
    char now[384];
    maps_of(g_maponly, now, sizeof now);
    CHECK(!strcmp(now, g_maponly_maps), "tsd-maponly shared maps '%s' -> '%s'", g_maponly_maps, now);
    maps_of(g_private, now, sizeof now);
    CHECK(!strcmp(now, g_private_maps), "tsd-maponly private maps '%s' -> '%s'", g_private_maps, now);
    for (size_t p = 0; p < 3; p++)
        CHECK(tgt_check_fill(g_maponly + p * PAGE, PAGE, 96 + (uint32_t)(p + 1)) < 0, "tsd-maponly page %zu differs", p + 1);
    CHECK(tgt_check_fill(g_private, PAGE, 95) < 0, "tsd-maponly private copy-on-write page lost");
    int a = open_mapped(g_maponly, 3 * PAGE), b = open_mapped(g_private, PAGE);
    if (a < 0 || b < 0) {
        FAIL("open map_files of tsd-maponly: %s", strerror(errno));
    } else {
        struct stat sa, sb;
        CHECK(fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_ino == sb.st_ino, "tsd-maponly's two mappings are different inodes");
        CHECK(page_is(a, 0, 96), "tsd-maponly page 0 differs (or the private copy reached it)");
        CHECK_EQ("tsd-maponly size", sa.st_size, 4 * PAGE);
        /* Created without MFD_ALLOW_SEALING: it carries F_SEAL_SEAL and refuses new seals. */
        CHECK_EQ("tsd-maponly seals", fcntl(a, F_GET_SEALS), F_SEAL_SEAL);
        CHECK(fcntl(a, F_ADD_SEALS, F_SEAL_GROW) < 0 && errno == EPERM, "tsd-maponly accepts seals");
        /* Still shared: a write through the mapping is the object's. */
        g_maponly[PAGE + 7] = 0x5d;
        uint8_t c = 0;
        CHECK(pread(a, &c, 1, 2 * PAGE + 7) == 1 && c == 0x5d, "tsd-maponly mapping no longer shares the memfd");
    }
    if (a >= 0) close(a);
    if (b >= 0) close(b);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    const int prw = PROT_READ | PROT_WRITE;

    g_fd = SYS(memfd_create("tsd-memfd", MFD_ALLOW_SEALING));
    SYS(ftruncate(g_fd, LEN));
    g_map = SYS(mmap(NULL, LEN, prw, MAP_SHARED, g_fd, 0));
    tgt_fill(g_map, DATA, 90);
    SYS(lseek(g_fd, 1234, SEEK_SET));

    g_sealed = SYS(memfd_create("tsd-sealed", MFD_ALLOW_SEALING | MFD_CLOEXEC));
    SYS(ftruncate(g_sealed, 4096));
    SYS(pwrite(g_sealed, "sealed!", 7, 0));
    SYS(fcntl(g_sealed, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_WRITE | F_SEAL_SEAL));

    g_empty = SYS(memfd_create("tsd-empty", 0));

    int mo = SYS(memfd_create("tsd-maponly", 0));
    SYS(ftruncate(mo, 4 * PAGE));
    uint8_t *whole = SYS(mmap(NULL, 4 * PAGE, prw, MAP_SHARED, mo, 0));
    fill_pages(whole, 4, 96);
    SYS(munmap(whole, 4 * PAGE));
    g_maponly = SYS(mmap(NULL, 3 * PAGE, prw, MAP_SHARED, mo, PAGE));
    g_private = SYS(mmap(NULL, PAGE, prw, MAP_PRIVATE, mo, 0));
    tgt_fill(g_private, PAGE, 95);
    close(mo);
    maps_of(g_maponly, g_maponly_maps, sizeof g_maponly_maps);
    maps_of(g_private, g_private_maps, sizeof g_private_maps);

    g_shfd = SYS(memfd_create("tsd-shared", 0));
    SYS(ftruncate(g_shfd, 4 * PAGE));
    g_shmap = SYS(mmap(NULL, 4 * PAGE, prw, MAP_SHARED, g_shfd, 0));
    tgt_fill(g_shmap, PAGE, 93);
    int up[2];
    SYS(pipe(up));
    pid_t child = SYS(fork());
    if (child == 0) {
        tgt_role = "child";
        close(up[0]);
        close(g_fd);
        close(g_sealed);
        close(g_empty);
        tgt_fill(g_shmap + PAGE, PAGE, 94);
        SYS(lseek(g_shfd, 777, SEEK_SET));
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", g_shfd);
        g_shro = SYS(open(proc, O_RDONLY));
        if (write(up[1], "k", 1) != 1) tgt_die("report setup");
        close(up[1]);
        tgt_wait_verify(NULL);
        child_verify();
        tgt_idle();
    }
    close(up[1]);
    char k;
    if (read(up[0], &k, 1) != 1) tgt_die("child setup");
    close(up[0]);

    char extra[64];
    snprintf(extra, sizeof extra, "child=%d\n", child);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    check_main_memfd();
    check_sealed();
    check_empty();
    check_maponly();
    check_shared_common();
    CHECK_EQ("tsd-shared offset (the child's, one description)", lseek(g_shfd, 0, SEEK_CUR), 777);
    g_shmap[3 * PAGE] = 0xa1;
    CHECK(shared_byte_becomes(2 * PAGE, 0xc1), "child's write to tsd-shared never showed up in the parent");
    static const char *const roles[] = {"child"};
    tgt_collect_parts(roles, 1, 4000);
    tgt_publish_result();
    tgt_idle();
}
