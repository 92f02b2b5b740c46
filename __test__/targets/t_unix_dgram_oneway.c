/*
 * Unix dgram sockets connected one way, the layout of a syslog-style receiver and its clients:
 * a receiver bound at CTL/rx.sock, three unbound senders connect()ed to it (two in the root, one
 * in a child) and not connected back, and an abstract-named receiver with one sender. The
 * senders sit at lower fd numbers than the receivers, so a dumper that writes socket entries in
 * fd order lists each sender before the receiver it names. 4 datagrams are queued at the
 * receiver (one per sender, the root's first sender twice), 1 at the abstract one.
 * Verification: each sender still names its receiver (getpeername) and is not bound; the
 * queued datagrams arrive in order with their boundaries; every sender's send() reaches its
 * receiver after restore (the child's through its own report).
 */
#include "common.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static socklen_t path_addr(struct sockaddr_un *sa, const char *path) {
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n >= sizeof sa->sun_path) tgt_die("%s: too long for a unix socket", path);
    memcpy(sa->sun_path, path, n + 1);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

static socklen_t abstract_addr(struct sockaddr_un *sa, const char *name) {
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    size_t n = strlen(name);
    memcpy(sa->sun_path + 1, name, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

/* A sender connected to `sa` and placed at fd `at`. */
static int sender(struct sockaddr_un *sa, socklen_t len, int at) {
    int s = SYS(socket(AF_UNIX, SOCK_DGRAM, 0));
    SYS(connect(s, (struct sockaddr *)sa, len));
    SYS(dup2(s, at));
    close(s);
    return at;
}

static void check_peer(const char *what, int s, const struct sockaddr_un *want, socklen_t wlen) {
    struct sockaddr_un got;
    socklen_t gl = sizeof got;
    memset(&got, 0, sizeof got);
    if (VSYS(getpeername(s, (struct sockaddr *)&got, &gl)) != 0) return;
    CHECK(gl == wlen && !memcmp(&got, want, wlen), "%s: peer name changed (len %u, want %u)", what, gl, wlen);
    gl = sizeof got;
    VSYS(getsockname(s, (struct sockaddr *)&got, &gl));
    CHECK(gl == sizeof(sa_family_t), "%s: sender became bound (name len %u)", what, gl);
}

static void check_recv(const char *what, int s, const char *want) {
    char buf[64] = {0};
    ssize_t n = recv(s, buf, sizeof buf, MSG_DONTWAIT);
    CHECK(n == (ssize_t)strlen(want) && !memcmp(buf, want, (size_t)n), "%s: got %zd '%.*s', want '%s'", what, n,
          n > 0 ? (int)n : 0, buf, want);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char path[PATH_MAX + 32], abstract[64];
    snprintf(path, sizeof path, "%s/rx.sock", tgt_ctl);
    snprintf(abstract, sizeof abstract, "tsdump-oneway-%d", (int)getpid());
    struct sockaddr_un rx_sa, ab_sa;
    socklen_t rx_len = path_addr(&rx_sa, path), ab_len = abstract_addr(&ab_sa, abstract);

    int rx0 = SYS(socket(AF_UNIX, SOCK_DGRAM, 0));
    SYS(bind(rx0, (struct sockaddr *)&rx_sa, rx_len));
    int ab0 = SYS(socket(AF_UNIX, SOCK_DGRAM, 0));
    SYS(bind(ab0, (struct sockaddr *)&ab_sa, ab_len));
    /* Receivers high, senders low. */
    int rx = SYS(dup2(rx0, 40)), ab = SYS(dup2(ab0, 41));
    close(rx0);
    close(ab0);
    int s1 = sender(&rx_sa, rx_len, 10), s2 = sender(&rx_sa, rx_len, 11), sa1 = sender(&ab_sa, ab_len, 12);

    SYS(send(s1, "first", 5, 0));
    int gate[2], sent[2];
    SYS(pipe(gate));
    SYS(pipe(sent));
    pid_t child = SYS(fork());
    if (child == 0) {
        tgt_role = "child";
        close(gate[1]);
        close(sent[0]);
        int s3 = sender(&rx_sa, rx_len, 13);
        SYS(send(s3, "child", 5, 0));
        close(sent[1]);
        close(rx);
        close(ab);
        close(s1);
        close(s2);
        close(sa1);
        char c;
        /* The root holds the gate's write end until verification: EOF means "verify now". */
        while (read(gate[0], &c, 1) < 0 && errno == EINTR) {
        }
        close(gate[0]);
        check_peer("child sender", s3, &rx_sa, rx_len);
        CHECK(send(s3, "child-after", 11, 0) == 11, "child sender cannot send after restore: %s", strerror(errno));
        tgt_publish_part();
        tgt_idle();
    }
    close(gate[0]);
    close(sent[1]);
    char c;
    if (read(sent[0], &c, 1) != 0) tgt_die("child did not report its send");
    close(sent[0]);
    SYS(dup2(gate[1], 30));
    close(gate[1]);
    SYS(send(s2, "second", 6, 0));
    SYS(send(s1, "third", 5, 0));
    SYS(send(sa1, "abstract", 8, 0));

    char info[64];
    snprintf(info, sizeof info, "child=%d\n", (int)child);
    tgt_ready(info);
    tgt_wait_verify(NULL);

    check_peer("sender 1", s1, &rx_sa, rx_len);
    check_peer("sender 2", s2, &rx_sa, rx_len);
    check_peer("abstract sender", sa1, &ab_sa, ab_len);
    check_recv("queued 1", rx, "first");
    check_recv("queued 2", rx, "child");
    check_recv("queued 3", rx, "second");
    check_recv("queued 4", rx, "third");
    char extra[64];
    ssize_t more = recv(rx, extra, sizeof extra, MSG_DONTWAIT);
    CHECK(more < 0 && errno == EAGAIN, "more than 4 datagrams queued (recv gave %zd)", more);
    check_recv("abstract queued", ab, "abstract");
    CHECK(send(s2, "s2-after", 8, 0) == 8, "sender 2 cannot send after restore: %s", strerror(errno));
    check_recv("after restore (sender 2)", rx, "s2-after");
    CHECK(send(sa1, "ab-after", 8, 0) == 8, "abstract sender cannot send after restore: %s", strerror(errno));
    check_recv("after restore (abstract)", ab, "ab-after");
    close(30); /* let the child verify */
    char buf[64] = {0};
    struct timeval tv = {10, 0};
    setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = recv(rx, buf, sizeof buf, 0);
    CHECK(n == 11 && !memcmp(buf, "child-after", 11), "child's datagram after restore: got %zd '%.*s'", n,
          n > 0 ? (int)n : 0, buf);
    const char *roles[] = {"child"};
    tgt_collect_parts(roles, 1, 10000);
    tgt_publish_result();
    tgt_idle();
}
