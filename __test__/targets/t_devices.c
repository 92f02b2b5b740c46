/*
 * Character devices a service holds: /dev/null (O_RDWR), /dev/urandom (O_RDONLY), /dev/full
 * (O_WRONLY) and /dev/kmsg (O_WRONLY, position 0: the kernel refuses to seek it). With the
 * argument "fuse" or "tun", also /dev/fuse or /dev/net/tun (state a reopen by name cannot
 * bring back: a dumper must refuse them).
 * Verification: each fd is still that device (rdev) with its access mode, /dev/urandom reads,
 * /dev/full refuses writes with ENOSPC, /dev/null swallows them.
 */
#include "common.h"
#include <sys/sysmacros.h>

struct dev {
    const char *path;
    int flags, fd;
};

static struct dev devs[] = {
    {"/dev/null", O_RDWR, 20}, {"/dev/urandom", O_RDONLY, 21}, {"/dev/full", O_WRONLY, 22}, {"/dev/kmsg", O_WRONLY, 23},
    {NULL, O_RDWR, 24},
};

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    if (argc > 2 && !strcmp(argv[2], "fuse")) devs[4].path = "/dev/fuse";
    if (argc > 2 && !strcmp(argv[2], "tun")) devs[4].path = "/dev/net/tun";
    dev_t rdev[5];
    for (int i = 0; i < 5 && devs[i].path; i++) {
        int fd = SYS(open(devs[i].path, devs[i].flags));
        SYS(dup2(fd, devs[i].fd));
        close(fd);
        struct stat st;
        SYS(fstat(devs[i].fd, &st));
        rdev[i] = st.st_rdev;
    }
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    for (int i = 0; i < 5 && devs[i].path; i++) {
        struct stat st;
        if (VSYS(fstat(devs[i].fd, &st)) != 0) continue;
        CHECK(S_ISCHR(st.st_mode) && st.st_rdev == rdev[i], "%s: fd %d is %u:%u", devs[i].path, devs[i].fd,
              major(st.st_rdev), minor(st.st_rdev));
        CHECK_EQ(devs[i].path, fcntl(devs[i].fd, F_GETFL) & O_ACCMODE, devs[i].flags);
    }
    char buf[16];
    CHECK(read(21, buf, sizeof buf) == (ssize_t)sizeof buf, "/dev/urandom read: %s", strerror(errno));
    CHECK(write(22, "x", 1) < 0 && errno == ENOSPC, "/dev/full write did not fail with ENOSPC");
    CHECK(write(20, "x", 1) == 1, "/dev/null write: %s", strerror(errno));
    tgt_publish_result();
    tgt_idle();
}
