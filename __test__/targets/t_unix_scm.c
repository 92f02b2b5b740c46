/*
 * Descriptors in flight: unix socket queues holding messages with SCM_RIGHTS, the way a process
 * hands fds to a worker that has not picked them up yet.
 *   - dgram pair d0/d1; queued at d1: "one" carrying [a pipe's read end (only in flight; its
 *     write end, kept at fd 21, has "pipedata" queued), a regular file opened at offset 42 (also
 *     open at fd 20: one description), an eventfd with counter 5 (only in flight)], then "two"
 *     carrying a unix socket u1 (only in flight) whose peer u0 stays at fd 22, each with data
 *     queued from the other, then "three" with no fds;
 *   - stream pair t0/t1; queued at t1: "abc" carrying a read-only fd of CTL/payload, then "def".
 * Verification: the messages arrive in order with their fds; each fd is the file it was: the
 * pipe carries the queued bytes, the file shares its offset with fd 20, the eventfd counts 5,
 * u1 and u0 still hold each other's data and talk; the stream's fd reads CTL/payload.
 * With the argument "epoll", a fourth dgram message carries an epoll instance (which CRIU and
 * tsdump cannot dump in flight); verification then expects it too.
 */
#include "common.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

static int send_fds(int s, const char *data, const int *fds, int n) {
    char cbuf[CMSG_SPACE(8 * sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = {(void *)data, strlen(data)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n) {
        mh.msg_control = cbuf;
        mh.msg_controllen = CMSG_SPACE(n * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(n * sizeof(int));
        memcpy(CMSG_DATA(c), fds, n * sizeof(int));
    }
    return (int)sendmsg(s, &mh, 0);
}

/* Receives one message; its fds (up to 8) into fds, their count into *n. */
static ssize_t recv_fds(int s, char *buf, size_t size, int *fds, int *n) {
    char cbuf[CMSG_SPACE(8 * sizeof(int))];
    struct iovec iov = {buf, size - 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    ssize_t r = recvmsg(s, &mh, MSG_DONTWAIT);
    *n = 0;
    if (r < 0) return r;
    buf[r] = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            *n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(fds, CMSG_DATA(c), *n * sizeof(int));
        }
    return r;
}

static void expect_msg(const char *what, int s, const char *want, int *fds, int nwant) {
    char buf[64];
    int n;
    ssize_t r = recv_fds(s, buf, sizeof buf, fds, &n);
    CHECK(r == (ssize_t)strlen(want) && !strcmp(buf, want), "%s: got %zd '%s', want '%s'", what, r, r > 0 ? buf : "",
          want);
    CHECK(n == nwant, "%s: %d fds, want %d", what, n, nwant);
    for (int i = n; i < nwant; i++) fds[i] = -1;
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int d[2], t[2], u[2], p[2];
    SYS(socketpair(AF_UNIX, SOCK_DGRAM, 0, d));
    SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, t));
    SYS(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, u));
    SYS(pipe(p));
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/data", tgt_ctl);
    int file = SYS(open(path, O_RDWR | O_CREAT | O_TRUNC, 0600));
    static char content[256];
    for (int i = 0; i < 255; i++) content[i] = (char)('a' + i % 26);
    SYS(write(file, content, 255));
    SYS(lseek(file, 42, SEEK_SET));
    SYS(dup2(file, 20));
    int efd = SYS(eventfd(5, 0));
    snprintf(path, sizeof path, "%s/payload", tgt_ctl);
    int pay = SYS(open(path, O_RDWR | O_CREAT | O_TRUNC, 0600));
    SYS(write(pay, "payload!", 8));
    close(pay);
    pay = SYS(open(path, O_RDONLY));

    SYS(write(p[1], "pipedata", 8));
    SYS(send(u[0], "to-u1", 5, 0));
    SYS(send(u[1], "to-u0", 5, 0));
    int one[] = {p[0], file, efd};
    if (send_fds(d[0], "one", one, 3) < 0) tgt_die("sendmsg one");
    if (send_fds(d[0], "two", &u[1], 1) < 0) tgt_die("sendmsg two");
    if (send_fds(d[0], "three", NULL, 0) < 0) tgt_die("sendmsg three");
    int with_epoll = argc > 2 && strcmp(argv[2], "epoll") == 0;
    if (with_epoll) {
        int ep = SYS(epoll_create1(0));
        if (send_fds(d[0], "epoll", &ep, 1) < 0) tgt_die("sendmsg epoll");
        close(ep);
    }
    if (send_fds(t[0], "abc", &pay, 1) < 0) tgt_die("sendmsg abc");
    if (send_fds(t[0], "def", NULL, 0) < 0) tgt_die("sendmsg def");
    /* What stays in the table: d0/d1, t0/t1, the pipe's write end (21), the file (20), u0 (22). */
    SYS(dup2(p[1], 21));
    SYS(dup2(u[0], 22));
    close(p[0]);
    close(p[1]);
    close(file);
    close(efd);
    close(u[0]);
    close(u[1]);
    close(pay);
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    int fds[8];
    expect_msg("dgram 1", d[1], "one", fds, 3);
    if (fds[0] >= 0) {
        char buf[16] = {0};
        CHECK(read(fds[0], buf, sizeof buf) == 8 && !memcmp(buf, "pipedata", 8), "in-flight pipe end lost its data");
        CHECK(write(21, "more", 4) == 4 && read(fds[0], buf, 4) == 4 && !memcmp(buf, "more", 4),
              "in-flight pipe end is not fd 21's pipe");
    }
    if (fds[1] >= 0) {
        CHECK_EQ("in-flight file offset", lseek(fds[1], 0, SEEK_CUR), 42);
        lseek(fds[1], 100, SEEK_SET);
        CHECK_EQ("fd 20 shares the in-flight file's offset", lseek(20, 0, SEEK_CUR), 100);
        char c;
        CHECK(pread(fds[1], &c, 1, 27) == 1 && c == 'b', "in-flight file contents");
    }
    if (fds[2] >= 0) {
        uint64_t v = 0;
        CHECK(read(fds[2], &v, 8) == 8 && v == 5, "in-flight eventfd counter %llu, want 5", (unsigned long long)v);
    }
    expect_msg("dgram 2", d[1], "two", fds, 1);
    if (fds[0] >= 0) {
        char buf[16] = {0};
        CHECK(recv(fds[0], buf, sizeof buf, MSG_DONTWAIT) == 5 && !memcmp(buf, "to-u1", 5), "in-flight socket lost its queue");
        CHECK(recv(22, buf, sizeof buf, MSG_DONTWAIT) == 5 && !memcmp(buf, "to-u0", 5), "u0 lost its queue");
        CHECK(send(fds[0], "ping", 4, 0) == 4 && recv(22, buf, sizeof buf, MSG_DONTWAIT) == 4 && !memcmp(buf, "ping", 4),
              "in-flight socket no longer talks to u0");
        int type = 0;
        socklen_t tl = sizeof type;
        getsockopt(fds[0], SOL_SOCKET, SO_TYPE, &type, &tl);
        CHECK_EQ("in-flight socket type", type, SOCK_SEQPACKET);
    }
    expect_msg("dgram 3", d[1], "three", fds, 0);
    if (with_epoll) {
        expect_msg("dgram 4", d[1], "epoll", fds, 1);
        struct epoll_event ev;
        CHECK(fds[0] >= 0 && epoll_wait(fds[0], &ev, 1, 0) == 0, "in-flight epoll instance");
    }
    expect_msg("stream 1", t[1], "abc", fds, 1);
    if (fds[0] >= 0) {
        char buf[16] = {0};
        CHECK(pread(fds[0], buf, 8, 0) == 8 && !memcmp(buf, "payload!", 8), "in-flight payload file");
        CHECK_EQ("in-flight payload access mode", fcntl(fds[0], F_GETFL) & O_ACCMODE, O_RDONLY);
    }
    expect_msg("stream 2", t[1], "def", fds, 0);
    tgt_publish_result();
    tgt_idle();
}
