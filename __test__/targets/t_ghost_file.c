/*
 * Files that exist only through open descriptors: a 8 KiB file unlinked while open (offset 100,
 * O_RDWR) and a second, 0-byte one opened O_WRONLY|O_APPEND then unlinked. A dumper must carry
 * their contents itself (CRIU: "ghost files", up to --ghost-limit, 1 MiB by default).
 * Verification: contents, offsets, flags; still unlinked (st_nlink 0); writes work.
 */
#include "common.h"

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char path[PATH_MAX + 32], path2[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/ghost.bin", tgt_ctl);
    snprintf(path2, sizeof path2, "%s/ghost-empty.log", tgt_ctl);
    static uint8_t data[8192];
    tgt_fill(data, sizeof data, 70);
    int fd = SYS(open(path, O_RDWR | O_CREAT | O_EXCL, 0640));
    SYS(write(fd, data, sizeof data));
    SYS(lseek(fd, 100, SEEK_SET));
    SYS(unlink(path));
    int fd2 = SYS(open(path2, O_WRONLY | O_CREAT | O_EXCL | O_APPEND, 0600));
    SYS(unlink(path2));
    struct stat before;
    SYS(fstat(fd, &before));
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    struct stat st;
    if (VSYS(fstat(fd, &st)) == 0) {
        CHECK_EQ("ghost nlink", st.st_nlink, 0);
        CHECK_EQ("ghost size", st.st_size, sizeof data);
        CHECK_EQ("ghost mode", st.st_mode & 07777, 0640);
    }
    CHECK(access(path, F_OK) != 0, "ghost path reappeared");
    CHECK_EQ("ghost offset", lseek(fd, 0, SEEK_CUR), 100);
    CHECK_EQ("ghost access mode", fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
    static uint8_t got[8192];
    CHECK(pread(fd, got, sizeof got, 0) == (ssize_t)sizeof got && !memcmp(got, data, sizeof data),
          "ghost contents differ");
    CHECK(write(fd, "ZZ", 2) == 2, "write to ghost: %s", strerror(errno));
    CHECK(pread(fd, got, 2, 100) == 2 && !memcmp(got, "ZZ", 2), "ghost write not at offset 100");
    if (VSYS(fstat(fd2, &st)) == 0) {
        CHECK_EQ("empty ghost nlink", st.st_nlink, 0);
        CHECK_EQ("empty ghost size", st.st_size, 0);
    }
    CHECK(fcntl(fd2, F_GETFL) & O_APPEND, "empty ghost lost O_APPEND");
    CHECK(write(fd2, "x", 1) == 1, "write to empty ghost: %s", strerror(errno));
    tgt_publish_result();
    tgt_idle();
}
