/*
 * A named FIFO (CTL/fifo) opened by the process at both ends, holding 3 000 queued bytes, plus
 * a child that holds the read end of a second FIFO with 500 bytes queued by the parent.
 * Verification: the same path/inode, the exact bytes then EAGAIN, data still flows.
 */
#include "common.h"
#include <sys/wait.h>

static void expect_bytes(const char *what, int fd, size_t len, uint32_t seed) {
    static uint8_t buf[4096];
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    ssize_t r = read(fd, buf, sizeof buf);
    CHECK(r == (ssize_t)len, "%s: read %zd bytes, want %zu", what, r, len);
    if (r > 0 && tgt_check_fill(buf, (size_t)r, seed) >= 0) FAIL("%s: data differs", what);
    CHECK(read(fd, buf, 1) < 0 && errno == EAGAIN, "%s: extra data", what);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char path[PATH_MAX + 32], path2[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/fifo", tgt_ctl);
    snprintf(path2, sizeof path2, "%s/fifo2", tgt_ctl);
    SYS(mkfifo(path, 0600));
    SYS(mkfifo(path2, 0600));
    int r = SYS(open(path, O_RDONLY | O_NONBLOCK));
    int w = SYS(open(path, O_WRONLY));
    SYS(fcntl(r, F_SETFL, 0));
    static uint8_t data[3000];
    tgt_fill(data, sizeof data, 80);
    SYS(write(w, data, sizeof data));

    pid_t child = SYS(fork());
    if (child == 0) {
        tgt_role = "child";
        close(r);
        close(w);
        int r2 = SYS(open(path2, O_RDONLY));
        tgt_wait_verify(NULL);
        expect_bytes("fifo2", r2, 500, 81);
        tgt_publish_part();
        tgt_idle();
    }
    int w2 = SYS(open(path2, O_WRONLY)); /* blocks until the child opened the read end */
    tgt_fill(data, 500, 81);
    SYS(write(w2, data, 500));
    struct stat before;
    SYS(fstat(r, &before));

    tgt_ready(NULL);
    tgt_wait_verify(NULL);
    struct stat st;
    if (VSYS(stat(path, &st)) == 0) CHECK(S_ISFIFO(st.st_mode) && st.st_ino == before.st_ino, "fifo path changed");
    if (VSYS(fstat(r, &st)) == 0) CHECK(st.st_ino == before.st_ino, "fd is not the fifo at the path");
    CHECK(!(fcntl(r, F_GETFL) & O_NONBLOCK), "fifo read end gained O_NONBLOCK");
    expect_bytes("fifo", r, 3000, 80);
    CHECK(write(w, "more", 4) == 4, "fifo write after restore");
    char in[8] = {0};
    CHECK(read(r, in, sizeof in) == 4 && !memcmp(in, "more", 4), "fifo data after restore");
    int stt;
    CHECK(waitpid(child, &stt, WNOHANG) == 0, "child gone");
    static const char *const roles[] = {"child"};
    tgt_collect_parts(roles, 1, 3000);
    tgt_publish_result();
    tgt_idle();
}
