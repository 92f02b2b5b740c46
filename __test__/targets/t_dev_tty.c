/*
 * A descriptor open on /dev/tty, the alias of the controlling terminal (what shells, editors and
 * password prompts open to reach the terminal whatever stdio is): O_RDWR|O_NONBLOCK at fd 10,
 * dup'd to fd 11 with FD_CLOEXEC. Run as a shell job on a terminal (the harness starts it under
 * `script`); setup fails without a controlling terminal. (One description: criu restore 4.1.1
 * waits forever on a task holding two separate opens of /dev/tty, each waiting for the other.)
 * Verification: both fds still name /dev/tty with their flags, reach the (possibly new)
 * controlling terminal of this session (TIOCGSID, TIOCGPGRP, isatty, a write goes through).
 */
#include "common.h"
#include <sys/ioctl.h>
#include <termios.h>

static void check_tty_fd(const char *what, int fd, int acc, int fl, int cloexec) {
    char link[64] = {0}, path[32];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    CHECK(readlink(path, link, sizeof link - 1) > 0 && !strcmp(link, "/dev/tty"), "%s: fd %d is '%s'", what, fd, link);
    int flags = fcntl(fd, F_GETFL);
    CHECK_EQ(what, flags & O_ACCMODE, acc);
    CHECK((flags & fl) == fl, "%s: status flags %#x lack %#x", what, flags, fl);
    CHECK_EQ("FD_CLOEXEC", (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, cloexec);
    CHECK(isatty(fd), "%s: not a terminal", what);
    pid_t sid = -1;
    CHECK(ioctl(fd, TIOCGSID, &sid) == 0 && sid == getsid(0), "%s: TIOCGSID %d, session %d", what, (int)sid,
          (int)getsid(0));
    CHECK(tcgetpgrp(fd) == getpgrp(), "%s: foreground group %d, ours %d", what, (int)tcgetpgrp(fd), (int)getpgrp());
    CHECK(write(fd, "", 0) == 0, "%s: write: %s", what, strerror(errno));
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int a = SYS(open("/dev/tty", O_RDWR | O_NONBLOCK));
    SYS(dup2(a, 10));
    SYS(dup3(a, 11, O_CLOEXEC));
    close(a);
    tgt_ready(NULL);
    tgt_wait_verify(NULL);
    check_tty_fd("fd 10", 10, O_RDWR, O_NONBLOCK, 0);
    check_tty_fd("fd 11", 11, O_RDWR, O_NONBLOCK, 1);
    /* Still one open file description: a flag set through one fd shows through the other. */
    VSYS(fcntl(10, F_SETFL, O_RDWR));
    CHECK(!(fcntl(11, F_GETFL) & O_NONBLOCK), "fds 10 and 11 no longer share their description");
    tgt_publish_result();
    tgt_idle();
}
