/*
 * A mapped file replaced on disk, the way a package upgrade replaces a library: CTL/mapped.bin
 * (3 pages of pattern 81) is mapped MAP_SHARED read-write and MAP_PRIVATE read-write, written
 * through both (the shared mapping's first 100 bytes get pattern 82, the private mapping's page 1
 * becomes a copy-on-write page of pattern 83), then a new one-page file of 'N' is renamed over
 * the path. /proc/PID/maps then shows both mappings as "CTL/mapped.bin (deleted)": the only
 * copy of the old file is the one the task maps. A dumper must keep it (CRIU: a ghost file).
 *
 * Verification: both mappings read what they read before (the shared writes, the private
 * copy-on-write page, the untouched pattern elsewhere, both mappings seeing the shared writes
 * in the pages the private one never wrote); they still share one file (a write through the
 * shared mapping shows in the private one's untouched page); that file is a deleted one
 * (st_nlink 0, the old size); and CTL/mapped.bin is still the replacement, untouched.
 */
#include "common.h"
#include <sys/mman.h>

#define PAGES 3
#define PAGE 4096
#define LEN (PAGES * PAGE)

static uint8_t expected(size_t off) {
    if (off < 100) return tgt_pattern_byte(82, off);
    return tgt_pattern_byte(81, off);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char path[PATH_MAX + 32], fresh[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/mapped.bin", tgt_ctl);
    snprintf(fresh, sizeof fresh, "%s/mapped.bin.new", tgt_ctl);
    static uint8_t data[LEN];
    tgt_fill(data, sizeof data, 81);
    int fd = SYS(open(path, O_RDWR | O_CREAT | O_EXCL, 0640));
    if (write(fd, data, sizeof data) != (ssize_t)sizeof data) tgt_die("writing %s", path);
    uint8_t *shared = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    uint8_t *priv = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (shared == MAP_FAILED || priv == MAP_FAILED) tgt_die("mmap: %s", strerror(errno));
    close(fd);
    tgt_fill(shared, 100, 82);
    tgt_fill(priv + PAGE, PAGE, 83);

    int n = SYS(open(fresh, O_WRONLY | O_CREAT | O_EXCL, 0600));
    static uint8_t repl[PAGE];
    memset(repl, 'N', sizeof repl);
    if (write(n, repl, sizeof repl) != (ssize_t)sizeof repl) tgt_die("writing %s", fresh);
    close(n);
    SYS(rename(fresh, path));

    char extra[64];
    snprintf(extra, sizeof extra, "shared=%lx\n", (unsigned long)shared);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    long bad = -1;
    for (size_t i = 0; i < LEN && bad < 0; i++)
        if (shared[i] != expected(i)) bad = (long)i;
    CHECK(bad < 0, "shared mapping differs at byte %ld", bad);
    bad = -1;
    for (size_t i = 0; i < LEN && bad < 0; i++) {
        uint8_t want = i >= PAGE && i < 2 * PAGE ? tgt_pattern_byte(83, i - PAGE) : expected(i);
        if (priv[i] != want) bad = (long)i;
    }
    CHECK(bad < 0, "private mapping differs at byte %ld", bad);

    /* still one file behind both: the private mapping's untouched last page follows the shared one */
    shared[2 * PAGE + 5] ^= 0xff;
    CHECK_EQ("a shared write seen through the private mapping", priv[2 * PAGE + 5], shared[2 * PAGE + 5]);
    shared[2 * PAGE + 5] ^= 0xff;

    char link[128];
    snprintf(link, sizeof link, "/proc/self/map_files/%lx-%lx", (unsigned long)shared, (unsigned long)(shared + LEN));
    struct stat st;
    if (VSYS(stat(link, &st)) == 0) {
        CHECK_EQ("mapped file nlink", st.st_nlink, 0);
        CHECK_EQ("mapped file size", st.st_size, LEN);
    }
    int r = VSYS(open(path, O_RDONLY));
    if (r >= 0) {
        static uint8_t now[PAGE + 1];
        ssize_t got = read(r, now, sizeof now);
        CHECK(got == PAGE && !memcmp(now, repl, PAGE), "%s is no longer the replacement (%zd bytes)", path, got);
        close(r);
    }
    tgt_publish_result();
    tgt_idle();
}
