/*
 * Sparse files that exist only through open descriptors (deleted while open):
 *   - big: 2 GiB long, holding 4 KiB at 1 MiB, 8 KiB at 1 GiB and 100 bytes at its very end
 *     (a few KiB allocated: under the default 1 MiB ghost limit, which counts allocated space);
 *   - small: 20 KiB, data in its first and last 4 KiB and a hole between (holes inside what a
 *     dumper might copy as one piece).
 * Verification: sizes, contents at every data offset, zeros in the holes, and the holes still
 * holes (SEEK_DATA/SEEK_HOLE give the same extents, st_blocks as small), nlink 0, offsets.
 */
#include "common.h"

#define GiB (1LL << 30)
#define MiB (1LL << 20)

struct piece {
    off_t off;
    size_t len;
};

static const struct piece big[] = {{MiB, 4096}, {GiB, 8192}, {2 * GiB - 100, 100}};
static const struct piece small[] = {{0, 4096}, {16384, 4096}};

static int make(const char *path, off_t size, const struct piece *p, int n, uint32_t seed) {
    int fd = SYS(open(path, O_RDWR | O_CREAT | O_EXCL, 0600));
    SYS(ftruncate(fd, size));
    static uint8_t buf[8192];
    for (int i = 0; i < n; i++) {
        tgt_fill(buf, p[i].len, seed + (uint32_t)i);
        if (pwrite(fd, buf, p[i].len, p[i].off) != (ssize_t)p[i].len) tgt_die("pwrite %s", path);
    }
    SYS(fsync(fd));
    SYS(unlink(path));
    return fd;
}

/* The data extents as SEEK_DATA/SEEK_HOLE report them, "off+len,..." */
static void extents(int fd, char *out, size_t size) {
    out[0] = 0;
    off_t pos = lseek(fd, 0, SEEK_CUR), end = lseek(fd, 0, SEEK_END), hole = 0;
    while (hole < end) {
        off_t data = lseek(fd, hole, SEEK_DATA);
        if (data < 0) break;
        hole = lseek(fd, data, SEEK_HOLE);
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%lld+%lld", used ? "," : "", (long long)data, (long long)(hole - data));
    }
    lseek(fd, pos, SEEK_SET);
}

static void check(const char *what, int fd, off_t size, const struct piece *p, int n, uint32_t seed,
                  const char *want_extents, long long blocks, off_t pos) {
    struct stat st;
    if (VSYS(fstat(fd, &st)) != 0) return;
    CHECK_EQ(what, st.st_size, size);
    CHECK(st.st_nlink == 0, "%s: nlink %ld", what, (long)st.st_nlink);
    CHECK(st.st_blocks == blocks, "%s: %lld blocks allocated, had %lld (holes filled?)", what,
          (long long)st.st_blocks, blocks);
    CHECK_EQ("offset", lseek(fd, 0, SEEK_CUR), pos);
    char ext[512];
    extents(fd, ext, sizeof ext);
    CHECK(!strcmp(ext, want_extents), "%s: data extents %s, had %s", what, ext, want_extents);
    static uint8_t got[8192], want[8192];
    for (int i = 0; i < n; i++) {
        tgt_fill(want, p[i].len, seed + (uint32_t)i);
        CHECK(pread(fd, got, p[i].len, p[i].off) == (ssize_t)p[i].len && !memcmp(got, want, p[i].len),
              "%s: data at %lld differs", what, (long long)p[i].off);
    }
    /* Zeros where there was nothing: just before and after each piece. */
    for (int i = 0; i < n; i++) {
        uint8_t z[16];
        if (p[i].off >= 16)
            CHECK(pread(fd, z, 16, p[i].off - 16) == 16 && tgt_check_zero(z, 16) < 0, "%s: not zero before %lld",
                  what, (long long)p[i].off);
    }
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/big.sparse", tgt_ctl);
    int fb = make(path, 2 * GiB, big, 3, 100);
    SYS(lseek(fb, 777, SEEK_SET));
    snprintf(path, sizeof path, "%s/small.sparse", tgt_ctl);
    int fs = make(path, 20480, small, 2, 200);
    SYS(lseek(fs, 5000, SEEK_SET));
    char bext[512], sext[512];
    extents(fb, bext, sizeof bext);
    extents(fs, sext, sizeof sext);
    struct stat bst, sst;
    SYS(fstat(fb, &bst));
    SYS(fstat(fs, &sst));
    char info[1200];
    snprintf(info, sizeof info, "big_extents=%s\nsmall_extents=%s\nbig_blocks=%lld\n", bext, sext,
             (long long)bst.st_blocks);
    tgt_ready(info);
    tgt_wait_verify(NULL);

    check("big", fb, 2 * GiB, big, 3, 100, bext, bst.st_blocks, 777);
    check("small", fs, 20480, small, 2, 200, sext, sst.st_blocks, 5000);
    tgt_publish_result();
    tgt_idle();
}
