/*
 * A terminal emulator's layout: the root holds a pty master (fd 10); its child "shell" started a
 * session of its own (setsid) and opened the slave, which became its controlling terminal (fd 0,
 * raw mode, foreground group the child's).
 * Verification: the child still leads its session with the slave as controlling terminal
 * (tcgetsid, tcgetpgrp, /dev/tty opens, tty_nr is the slave) and bytes cross the pair both ways; the root's
 * master still has the same index.
 */
#include "common.h"
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <termios.h>

#define MASTER 10

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

/* The kernel's new_encode_dev, as /proc/PID/stat prints tty_nr. */
static unsigned encode_dev(dev_t d) {
    unsigned ma = major(d), mi = minor(d);
    return (mi & 0xff) | (ma << 8) | ((mi & ~0xffu) << 12);
}

static long long tty_nr(void) {
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0) close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    long long nr = -1;
    /* ") S ppid pgrp session tty_nr" */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %lld", &nr) != 1) return -1;
    return nr;
}

static void shell(const char *slave_path, int up) {
    tgt_role = "shell";
    SYS(setsid());
    /* A session leader without a terminal acquires the first one it opens. */
    int s = SYS(open(slave_path, O_RDWR));
    SYS(dup2(s, 0));
    if (s != 0) close(s);
    struct termios t;
    SYS(tcgetattr(0, &t));
    cfmakeraw(&t);
    SYS(tcsetattr(0, TCSANOW, &t));
    struct stat st;
    SYS(fstat(0, &st));
    char one = 1;
    if (write(up, &one, 1) != 1) tgt_die("report up");
    close(up);
    tgt_wait_verify(NULL);

    pid_t me = getpid();
    CHECK_EQ("getsid", getsid(0), me);
    CHECK_EQ("tcgetsid", tcgetsid(0), me);
    CHECK_EQ("tcgetpgrp", tcgetpgrp(0), getpgrp());
    int tty = open("/dev/tty", O_RDWR);
    CHECK(tty >= 0, "no controlling terminal: /dev/tty: %s", strerror(errno));
    if (tty >= 0) close(tty);
    CHECK_EQ("tty_nr in /proc/self/stat", tty_nr(), (long long)encode_dev(st.st_rdev));
    char buf[16] = {0};
    CHECK(read_n(0, buf, 4) == 4 && !memcmp(buf, "ping", 4), "shell read '%s'", buf);
    if (write(0, "pong", 4) != 4) FAIL("shell write: %s", strerror(errno));
    tgt_publish_part();
    tgt_idle();
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int m = SYS(posix_openpt(O_RDWR | O_NOCTTY));
    SYS(grantpt(m));
    SYS(unlockpt(m));
    char name[64];
    if (ptsname_r(m, name, sizeof name) != 0) tgt_die("ptsname_r");
    SYS(dup2(m, MASTER));
    close(m);
    int index = -1;
    SYS(ioctl(MASTER, TIOCGPTN, &index));
    int up[2];
    SYS(pipe(up));
    pid_t kid = SYS(fork());
    if (kid == 0) {
        close(up[0]);
        close(MASTER);
        shell(name, up[1]);
    }
    close(up[1]);
    char b;
    if (read(up[0], &b, 1) != 1) tgt_die("shell did not come up");
    close(up[0]);

    char extra[128];
    snprintf(extra, sizeof extra, "shell=%d\npts=%s\n", (int)kid, name);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    int now = -1;
    CHECK(ioctl(MASTER, TIOCGPTN, &now) == 0 && now == index, "master index %d, want %d", now, index);
    if (write(MASTER, "ping", 4) != 4) FAIL("write master: %s", strerror(errno));
    char buf[16] = {0};
    CHECK(read_n(MASTER, buf, 4) == 4 && !memcmp(buf, "pong", 4), "master read '%s'", buf);
    const char *roles[] = {"shell"};
    tgt_collect_parts(roles, 1, 3000);
    tgt_publish_result();
    tgt_idle();
}
