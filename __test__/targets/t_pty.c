/*
 * A pseudo-terminal pair the process opened itself (not its controlling terminal): the master
 * from /dev/ptmx (fd 10) and its slave /dev/pts/N (fd 11), the slave in raw mode with a 37x101
 * window. Before the dump, 6 bytes written on the master wait unread at the slave and 9 bytes
 * written on the slave wait unread at the master.
 * Verification: the slave is still /dev/pts/N of this master (TIOCGPTN, st_rdev), raw mode and
 * the window size are kept, the queued bytes are still there, and new bytes cross both ways.
 */
#include "common.h"
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>

#define MASTER 10
#define SLAVE 11
static const char TO_SLAVE[] = "queued";
static const char TO_MASTER[] = "from-pts!";

/* Reads exactly n bytes (3 s at most); returns what arrived. */
static ssize_t read_n(int fd, char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 3000) != 1) break;
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int pending(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int m = SYS(posix_openpt(O_RDWR | O_NOCTTY));
    SYS(grantpt(m));
    SYS(unlockpt(m));
    char name[64];
    if (ptsname_r(m, name, sizeof name) != 0) tgt_die("ptsname_r");
    int s = SYS(open(name, O_RDWR | O_NOCTTY));
    SYS(dup2(m, MASTER));
    SYS(dup2(s, SLAVE));
    close(m);
    close(s);
    struct termios t;
    SYS(tcgetattr(SLAVE, &t));
    cfmakeraw(&t);
    SYS(tcsetattr(SLAVE, TCSANOW, &t));
    struct winsize ws = {.ws_row = 37, .ws_col = 101};
    SYS(ioctl(MASTER, TIOCSWINSZ, &ws));
    if (write(MASTER, TO_SLAVE, strlen(TO_SLAVE)) != (ssize_t)strlen(TO_SLAVE)) tgt_die("write master");
    if (write(SLAVE, TO_MASTER, strlen(TO_MASTER)) != (ssize_t)strlen(TO_MASTER)) tgt_die("write slave");
    int index = -1;
    SYS(ioctl(MASTER, TIOCGPTN, &index));
    struct stat st;
    SYS(fstat(SLAVE, &st));

    char extra[128];
    snprintf(extra, sizeof extra, "pts=%s\nindex=%d\n", name, index);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    int now = -1;
    CHECK(ioctl(MASTER, TIOCGPTN, &now) == 0 && now == index, "master index %d, want %d", now, index);
    char path[64];
    CHECK(ptsname_r(MASTER, path, sizeof path) == 0 && strcmp(path, name) == 0, "ptsname %s, want %s", path, name);
    struct stat st2;
    CHECK(fstat(SLAVE, &st2) == 0 && st2.st_rdev == st.st_rdev, "slave rdev %#lx, want %#lx",
          (unsigned long)st2.st_rdev, (unsigned long)st.st_rdev);
    struct termios t2;
    CHECK(tcgetattr(SLAVE, &t2) == 0 && !(t2.c_lflag & (ICANON | ECHO)) && !(t2.c_oflag & OPOST),
          "slave left raw mode (lflag %#x oflag %#x)", t2.c_lflag, t2.c_oflag);
    struct winsize w2 = {0};
    CHECK(ioctl(SLAVE, TIOCGWINSZ, &w2) == 0 && w2.ws_row == 37 && w2.ws_col == 101, "window %ux%u, want 37x101",
          w2.ws_row, w2.ws_col);

    char buf[64] = {0};
    ssize_t n = read_n(SLAVE, buf, strlen(TO_SLAVE));
    CHECK(n == (ssize_t)strlen(TO_SLAVE) && !memcmp(buf, TO_SLAVE, (size_t)n), "slave queued %zd bytes '%.*s'", n,
          (int)(n > 0 ? n : 0), buf);
    memset(buf, 0, sizeof buf);
    n = read_n(MASTER, buf, strlen(TO_MASTER));
    CHECK(n == (ssize_t)strlen(TO_MASTER) && !memcmp(buf, TO_MASTER, (size_t)n), "master queued %zd bytes '%.*s'", n,
          (int)(n > 0 ? n : 0), buf);
    CHECK(pending(SLAVE) == 0 && pending(MASTER) == 0, "more bytes than were queued");

    if (write(MASTER, "ping", 4) != 4) FAIL("write master: %s", strerror(errno));
    memset(buf, 0, sizeof buf);
    CHECK(read_n(SLAVE, buf, 4) == 4 && !memcmp(buf, "ping", 4), "master->slave after restore '%s'", buf);
    if (write(SLAVE, "pong", 4) != 4) FAIL("write slave: %s", strerror(errno));
    memset(buf, 0, sizeof buf);
    CHECK(read_n(MASTER, buf, 4) == 4 && !memcmp(buf, "pong", 4), "slave->master after restore '%s'", buf);
    tgt_publish_result();
    tgt_idle();
}
