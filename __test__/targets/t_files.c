/*
 * Regular files and the fs context, at fixed fd numbers:
 *   10 data.bin  O_RDONLY, offset 123, FD_CLOEXEC      11 data.bin  O_RDONLY|O_NONBLOCK, offset 1000
 *   12 rw.bin    O_RDWR, offset 4103                   13 append.log O_WRONLY|O_APPEND
 *   50 dup of 12 (shares the offset)                   60 dup3(10, O_CLOEXEC)
 *   14 the work directory (O_DIRECTORY)                15 /dev/null O_WRONLY   16 /dev/zero
 * cwd is CTL/files/sub (files opened relative to it), umask 027.
 * Verification: offsets, access modes, status flags and FD_CLOEXEC per fd; dups share their
 * offset and originals do not; each fd is the same inode as its path; reads continue where they
 * left off; writes land at the offset (O_RDWR) or at the end (O_APPEND); cwd and umask kept.
 */
#include "common.h"
#include <sys/sysmacros.h>

#define DATA_LEN (64 * 1024)
#define RW_LEN (16 * 1024)

static char g_work[PATH_MAX + 32], g_sub[PATH_MAX + 64];

static void place(int fd, int at) {
    if (fd == at) return;
    SYS(dup2(fd, at));
    close(fd);
}

static void same_inode(int fd, const char *path) {
    struct stat a, b;
    if (fstat(fd, &a) != 0 || stat(path, &b) != 0) {
        FAIL("stat fd %d / %s: %s", fd, path, strerror(errno));
        return;
    }
    CHECK(a.st_dev == b.st_dev && a.st_ino == b.st_ino, "fd %d is not %s", fd, path);
}

static void expect_flags(int fd, int accmode, int set, int unset, int cloexec) {
    int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
    if (fl < 0 || fdfl < 0) {
        FAIL("fd %d is not open after restore", fd);
        return;
    }
    if ((fl & O_ACCMODE) != accmode) FAIL("fd %d access mode %d, want %d", fd, fl & O_ACCMODE, accmode);
    if ((fl & set) != set) FAIL("fd %d lost flags 0%o (has 0%o)", fd, set, fl);
    if (fl & unset) FAIL("fd %d gained flags 0%o (has 0%o)", fd, fl & unset, fl);
    if (!!(fdfl & FD_CLOEXEC) != cloexec) FAIL("fd %d FD_CLOEXEC %d, want %d", fd, !!(fdfl & FD_CLOEXEC), cloexec);
}

static void expect_pos(int fd, off_t want) {
    off_t pos = lseek(fd, 0, SEEK_CUR);
    if (pos != want) FAIL("fd %d offset %lld, want %lld", fd, (long long)pos, (long long)want);
}

static void expect_read(int fd, off_t at, size_t len, uint32_t seed, size_t seed_len) {
    uint8_t got[256], want[DATA_LEN];
    tgt_fill(want, seed_len, seed);
    ssize_t r = read(fd, got, len);
    if (r != (ssize_t)len) {
        FAIL("fd %d: read %zd of %zu", fd, r, len);
        return;
    }
    CHECK(!memcmp(got, want + at, len), "fd %d: data at %lld differs", fd, (long long)at);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    snprintf(g_work, sizeof g_work, "%s/files", tgt_ctl);
    snprintf(g_sub, sizeof g_sub, "%s/sub", g_work);
    SYS(mkdir(g_work, 0700));
    SYS(mkdir(g_sub, 0700));
    SYS(chdir(g_sub));
    umask(027);

    static uint8_t data[DATA_LEN];
    tgt_fill(data, DATA_LEN, 30);
    int w = SYS(open("data.bin", O_WRONLY | O_CREAT | O_EXCL, 0644));
    SYS(write(w, data, DATA_LEN));
    close(w);
    int rw = SYS(open("rw.bin", O_RDWR | O_CREAT | O_EXCL, 0600));
    tgt_fill(data, RW_LEN, 31);
    SYS(write(rw, data, RW_LEN));
    int app = SYS(open("append.log", O_WRONLY | O_CREAT | O_APPEND | O_EXCL, 0640));
    SYS(write(app, "line1\n", 6));

    /* Park low fds out of the way first so the numbers below are free. */
    place(rw, 12);
    place(app, 13);
    int ro = SYS(open("data.bin", O_RDONLY));
    uint8_t skip[123];
    SYS(read(ro, skip, sizeof skip));
    place(ro, 10);
    SYS(fcntl(10, F_SETFD, FD_CLOEXEC));
    int ro2 = SYS(open("data.bin", O_RDONLY | O_NONBLOCK));
    SYS(lseek(ro2, 1000, SEEK_SET));
    place(ro2, 11);
    SYS(lseek(12, 4096 + 7, SEEK_SET));
    SYS(dup2(12, 50));
    SYS(dup3(10, 60, O_CLOEXEC));
    place(SYS(open(g_work, O_RDONLY | O_DIRECTORY)), 14);
    place(SYS(open("/dev/null", O_WRONLY)), 15);
    place(SYS(open("/dev/zero", O_RDONLY)), 16);

    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    char cwd[PATH_MAX];
    CHECK(getcwd(cwd, sizeof cwd) && !strcmp(cwd, g_sub), "cwd '%s', want '%s'", cwd, g_sub);
    mode_t m = umask(027);
    CHECK_EQ("umask", m, 027);

    struct stat st;
    expect_flags(10, O_RDONLY, 0, O_NONBLOCK | O_APPEND, 1);
    expect_flags(11, O_RDONLY, O_NONBLOCK, O_APPEND, 0);
    expect_flags(12, O_RDWR, 0, O_NONBLOCK | O_APPEND, 0);
    expect_flags(13, O_WRONLY, O_APPEND, O_NONBLOCK, 0);
    expect_flags(50, O_RDWR, 0, O_APPEND, 0);
    expect_flags(60, O_RDONLY, 0, O_APPEND, 1);
    /* O_DIRECTORY only steers open(); whether F_GETFL echoes it is not state. S_ISDIR is. */
    expect_flags(14, O_RDONLY, 0, 0, 0);
    if (fstat(14, &st) == 0) CHECK(S_ISDIR(st.st_mode), "fd 14 is not a directory");
    expect_flags(15, O_WRONLY, 0, 0, 0);
    expect_flags(16, O_RDONLY, 0, 0, 0);
    CHECK(fcntl(17, F_GETFD) < 0 && errno == EBADF, "fd 17 is open but was not");

    same_inode(10, "data.bin");
    same_inode(11, "data.bin");
    same_inode(12, "rw.bin");
    same_inode(13, "append.log");
    same_inode(14, g_work);
    same_inode(15, "/dev/null");
    same_inode(16, "/dev/zero");
    if (fstat(15, &st) == 0) CHECK(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3), "fd 15 not /dev/null");
    if (stat("data.bin", &st) == 0) {
        CHECK_EQ("data.bin size", st.st_size, DATA_LEN);
        CHECK_EQ("data.bin mode (0644 & ~027)", st.st_mode & 07777, 0640);
    }

    expect_pos(10, 123);
    expect_pos(60, 123);
    expect_pos(11, 1000);
    expect_pos(12, 4103);
    expect_pos(50, 4103);
    expect_read(10, 123, 100, 30, DATA_LEN);
    expect_pos(60, 223); /* 60 shares 10's open file description */
    expect_pos(11, 1000); /* 11 has its own */
    expect_read(11, 1000, 50, 30, DATA_LEN);
    CHECK(write(10, "x", 1) < 0 && errno == EBADF, "O_RDONLY fd 10 accepted a write");

    expect_read(50, 4103, 10, 31, RW_LEN);
    expect_pos(12, 4113);
    CHECK(write(12, "WXYZ", 4) == 4, "write to rw.bin: %s", strerror(errno));
    char back[4] = {0};
    CHECK(pread(50, back, 4, 4113) == 4 && !memcmp(back, "WXYZ", 4), "rw.bin write not at offset 4113");

    CHECK(write(13, "line2\n", 6) == 6, "append: %s", strerror(errno));
    char log[32] = {0};
    int lf = open("append.log", O_RDONLY);
    ssize_t n = lf >= 0 ? read(lf, log, sizeof log - 1) : -1;
    if (lf >= 0) close(lf);
    CHECK(n == 12 && !strcmp(log, "line1\nline2\n"), "append.log is '%s'", log);

    char z[64];
    memset(z, 1, sizeof z);
    CHECK(read(16, z, sizeof z) == sizeof z && tgt_check_zero(z, sizeof z) < 0, "/dev/zero read");
    CHECK(write(15, "x", 1) == 1, "/dev/null write");

    /* A new file created now gets the restored umask. */
    int nf = open("new.txt", O_CREAT | O_WRONLY, 0666);
    if (nf >= 0 && fstat(nf, &st) == 0) CHECK_EQ("new file mode", st.st_mode & 0777, 0640);
    if (nf >= 0) close(nf);

    tgt_publish_result();
    tgt_idle();
}
