/*
 * An established TCP connection over loopback with bytes queued both ways, for --tcp-established.
 * One program, two roles:
 *
 *   t_tcp_established CTL peer [OPTS]   the far end, never dumped: listens (SO_RCVBUF 4096, so its
 *                                       window closes early), publishes port=, accepts, sends
 *                                       PEER_BYTES the target leaves unread, then reads nothing
 *                                       until CTL/verify.
 *   t_tcp_established CTL target PORT [OPTS]
 *                                       the dumped end: connects to PORT, waits until the peer's
 *                                       PEER_BYTES sit in its receive queue, writes TARGET_BYTES
 *                                       (most stay in its send queue: the peer's window is
 *                                       closed). With "go" (given to both ends) it first
 *                                       publishes ready and writes only once CTL/go exists, then
 *                                       waits until part of the send queue is sent but
 *                                       unacknowledged (the test drops the peer's ACKs
 *                                       meanwhile) and publishes CTL/written. Its MSS is 1000 and
 *                                       the peer's buffer 64 KiB then, so what goes out is the
 *                                       first congestion window (10 segments) and the peer's
 *                                       window stays open: the window the target last heard of
 *                                       — what a dump records — stays true.
 *                                       With "packet" it also holds a packet socket, opened
 *                                       after the connection, which tsdump refuses: a dump that
 *                                       fails after the connection went into repair mode.
 *
 * "v6" puts both ends on ::1 instead of 127.0.0.1; "mapped" makes the target an AF_INET6 socket
 * connected to the IPv4 peer through ::ffff:127.0.0.1. Half-closed connections, both ends given
 * the same word: "peershut" — the peer shuts its side down after its bytes (the target is in
 * CLOSE_WAIT, its receive queue ends with the FIN: it reads PEER_BYTES then end of stream, and
 * sends MORE_OUT only); "targetshut" — the target shuts its side down after its bytes (FIN_WAIT1,
 * the FIN queued behind the unsent bytes: the peer reads TARGET_BYTES then end of stream, and
 * answers MORE_IN only).
 *
 * Closing states, where both ends shut down, each word given to both ends too:
 *   "finwait2"  the target shuts down after its bytes and the peer, whose receive buffer holds
 *               them all, acknowledges bytes and FIN: FIN_WAIT2, the send queue empty. After
 *               verify the peer reads TARGET_BYTES and end of stream, sends MORE_IN and shuts
 *               down; the target reads PEER_BYTES, MORE_IN, end of stream.
 *   "lastack"   the peer shuts down after its bytes; once its FIN is in, the target writes and
 *               shuts down: LAST_ACK, the FIN queued behind the bytes the peer's closed window
 *               holds back.
 *   "closing"   the target writes and shuts down first (FIN_WAIT1, its FIN held back as above);
 *               the peer shuts down when CTL/shut appears in its own directory, so its FIN
 *               reaches a target in FIN_WAIT1: CLOSING.
 * In these three both ends, after the streams, wait until their socket reports TCP_CLOSE (its
 * FIN acknowledged and the other's received): the shutdown completed on both sides.
 * "synsent" (both ends): the target's connect() is left in SYN_SENT (the test drops the SYNs);
 * see run_target_synsent.
 *
 * On CTL/verify, both ends check the stream and carry on: the target reads the PEER_BYTES that
 * waited in its receive queue, the peer reads the TARGET_BYTES of the target's send queue (each
 * byte exactly once, in order), then the target sends MORE_OUT bytes and the peer answers with
 * MORE_IN, each checked. The target also checks its port, O_NONBLOCK and TCP_NODELAY survived.
 */
#include "common.h"
#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#define PEER_BYTES 3000
#define TARGET_BYTES 100000
#define MORE_OUT 200000
#define MORE_IN 100000
#define SEED_PEER 0xB0Bu
#define SEED_TARGET 0xA11u
#define SEED_MORE_OUT 0xC0Cu
#define SEED_MORE_IN 0xD0Du

static int wait_for(int fd, short events, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = events};
    int r;
    while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
    }
    return r == 1;
}

/* Writes len pattern bytes (seed, starting at pattern offset 0); 0 or -1 with errno. */
static int send_pattern(int fd, size_t len, uint32_t seed, int timeout_ms) {
    static uint8_t buf[65536];
    size_t off = 0;
    while (off < len) {
        size_t n = len - off < sizeof buf ? len - off : sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = tgt_pattern_byte(seed, off + i);
        ssize_t w = send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) return -1;
            if (!wait_for(fd, POLLOUT, timeout_ms)) {
                errno = ETIMEDOUT;
                return -1;
            }
            continue;
        }
        off += (size_t)w;
    }
    return 0;
}

/*
 * Reads exactly len bytes and checks them against the pattern. Returns -1 when all is well, else
 * the offset of the first bad or missing byte (the reason in *why).
 */
static long recv_pattern(int fd, size_t len, uint32_t seed, int timeout_ms, const char **why) {
    static uint8_t buf[65536];
    size_t off = 0;
    while (off < len) {
        size_t n = len - off < sizeof buf ? len - off : sizeof buf;
        ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) {
            if (!wait_for(fd, POLLIN, timeout_ms)) {
                *why = "timeout";
                return (long)off;
            }
            continue;
        }
        if (r <= 0) {
            *why = r == 0 ? "end of stream" : strerror(errno);
            return (long)off;
        }
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] != tgt_pattern_byte(seed, off + (size_t)i)) {
                *why = "wrong byte";
                return (long)(off + (size_t)i);
            }
        }
        off += (size_t)r;
    }
    return -1;
}

static int queued(int fd, unsigned long req) {
    int v = -1;
    if (ioctl(fd, req, &v) != 0) return -1;
    return v;
}

static int local_port(int fd) {
    struct sockaddr_storage sa;
    socklen_t l = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &l) != 0) return -1;
    if (sa.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
    return ntohs(((struct sockaddr_in *)&sa)->sin_port);
}

/* The loopback address (v6: ::1, 2: ::ffff:127.0.0.1, else 127.0.0.1), with a port. */
static socklen_t loopback(int v6, int port, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        if (v6 == 2)
            inet_pton(AF_INET6, "::ffff:127.0.0.1", &a->sin6_addr);
        else
            a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons((uint16_t)port);
        return sizeof *a;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons((uint16_t)port);
    return sizeof *a;
}

static void check_stream(const char *what, int fd, size_t len, uint32_t seed) {
    const char *why = "";
    long bad = recv_pattern(fd, len, seed, 20000, &why);
    if (bad >= 0) FAIL("%s: %s at byte %ld of %zu", what, why, bad, len);
}

struct opts {
    int go, packet, v6, peershut, targetshut, finwait2, lastack, closing, synsent;
};

/* Who shuts down when, from the mode words (see the top of the file). */
static int target_shuts(struct opts o) { return o.targetshut || o.finwait2 || o.lastack || o.closing; }
static int peer_shuts_before_dump(struct opts o) { return o.peershut || o.lastack || o.closing; }
static int both_shut(struct opts o) { return o.finwait2 || o.lastack || o.closing; }

static int tcp_state(int fd) {
    struct tcp_info ti;
    socklen_t l = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) != 0) return -1;
    return ti.tcpi_state;
}

/* Waits up to timeout_ms for the socket to reach state; 1 when it did. */
static int wait_state(int fd, int state, int timeout_ms) {
    long long deadline = tgt_now_ms() + timeout_ms;
    while (tcp_state(fd) != state) {
        if (tgt_now_ms() > deadline) return 0;
        tgt_sleep_ms(5);
    }
    return 1;
}

static void expect_eof(const char *what, int fd) {
    char c;
    ssize_t r = -1;
    if (wait_for(fd, POLLIN, 20000)) r = recv(fd, &c, 1, MSG_DONTWAIT);
    CHECK(r == 0, "%s: expected end of stream, got %zd (%s)", what, r, r < 0 ? strerror(errno) : "data");
}

static void run_peer(struct opts o) {
    tgt_role = "peer";
    struct sockaddr_storage sa;
    socklen_t salen = loopback(o.v6 == 1, 0, &sa);
    int ls = SYS(socket(sa.ss_family, SOCK_STREAM, 0));
    /* finwait2: room for all of the target's bytes, so that it sees them and its FIN acknowledged */
    int rcvbuf = o.finwait2 ? 1 << 20 : o.go ? 65536 : 4096;
    /* Set on the listener, inherited by the accepted socket and announced in the handshake. */
    SYS(setsockopt(ls, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf));
    SYS(bind(ls, (struct sockaddr *)&sa, salen));
    SYS(listen(ls, 1));
    char extra[64];
    snprintf(extra, sizeof extra, "port=%d\n", local_port(ls));
    tgt_ready(extra);
    int c = SYS(accept(ls, NULL, NULL));
    close(ls);
    if (send_pattern(c, PEER_BYTES, SEED_PEER, 5000) != 0) tgt_die("sending the peer's bytes");
    if (o.peershut || o.lastack) SYS(shutdown(c, SHUT_WR));
    if (o.closing) {
        while (!tgt_ctl_exists("shut")) tgt_sleep_ms(5);
        SYS(shutdown(c, SHUT_WR));
    }
    tgt_log("sent %d bytes; waiting for verify", PEER_BYTES);
    tgt_wait_verify(NULL);

    check_stream("the target's queued bytes", c, TARGET_BYTES, SEED_TARGET);
    if (target_shuts(o))
        expect_eof("after the target's queued bytes", c);
    else
        check_stream("the target's bytes after the dump", c, MORE_OUT, SEED_MORE_OUT);
    if (!peer_shuts_before_dump(o) && send_pattern(c, MORE_IN, SEED_MORE_IN, 20000) != 0) FAIL("answering: %s", strerror(errno));
    if (o.finwait2) SYS(shutdown(c, SHUT_WR));
    if (both_shut(o)) CHECK(wait_state(c, TCP_CLOSE, 20000), "the peer's socket never closed: state %d", tcp_state(c));
    tgt_publish_result();
    tgt_idle();
}

static void run_target(int port, struct opts o) {
    tgt_role = "target";
    int go = o.go;
    struct sockaddr_storage sa;
    socklen_t salen = loopback(o.v6, port, &sa);
    int s = SYS(socket(sa.ss_family, SOCK_STREAM, 0));
    int big = 1 << 20, one = 1;
    SYS(setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, sizeof big));
    int mss = 1000;
    if (go) SYS(setsockopt(s, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss));
    SYS(connect(s, (struct sockaddr *)&sa, salen));
    SYS(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    SYS(fcntl(s, F_SETFL, O_NONBLOCK));
    if (o.packet) SYS(socket(AF_PACKET, SOCK_DGRAM, 0));
    long long deadline = tgt_now_ms() + 5000;
    while (queued(s, SIOCINQ) != PEER_BYTES) {
        if (tgt_now_ms() > deadline) tgt_die("the peer's %d bytes did not arrive (queued %d)", PEER_BYTES, queued(s, SIOCINQ));
        tgt_sleep_ms(5);
    }
    int lport = local_port(s);
    char extra[96];
    snprintf(extra, sizeof extra, "local_port=%d\npeer_port=%d\n", lport, port);
    if (go) {
        tgt_ready(extra);
        while (!tgt_ctl_exists("go")) tgt_sleep_ms(5);
    }
    /* lastack: the peer's FIN first */
    if (o.lastack && !wait_state(s, TCP_CLOSE_WAIT, 5000)) tgt_die("the peer's FIN did not arrive (state %d)", tcp_state(s));
    /* Everything must fit in the send buffer at once: the peer reads nothing for now. */
    ssize_t off = 0;
    static uint8_t buf[TARGET_BYTES];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = tgt_pattern_byte(SEED_TARGET, i);
    while (off < TARGET_BYTES) {
        ssize_t w = send(s, buf + off, (size_t)(TARGET_BYTES - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) tgt_die("writing %d bytes stopped at %zd", TARGET_BYTES, off);
        off += w;
    }
    if (target_shuts(o)) SYS(shutdown(s, SHUT_WR));
    /* Wait for the queue to settle: everything the peer's window took was sent (finwait2: and
       acknowledged, FIN included). */
    deadline = tgt_now_ms() + 5000;
    for (;;) {
        int outq = queued(s, SIOCOUTQ), unsent = queued(s, SIOCOUTQNSD);
        /* (our FIN, once queued, counts as one byte in both) */
        if (o.finwait2 ? outq == 0 && tcp_state(s) == TCP_FIN_WAIT2
            : go       ? outq == TARGET_BYTES && unsent < outq
                       : outq < TARGET_BYTES && unsent == outq)
            break;
        if (tgt_now_ms() > deadline) tgt_die("send queue never settled: outq %d unsent %d", outq, unsent);
        tgt_sleep_ms(5);
    }
    tgt_sleep_ms(50);
    tgt_log("send queue: %d bytes, %d never sent; state %d", queued(s, SIOCOUTQ), queued(s, SIOCOUTQNSD), tcp_state(s));
    if (go)
        tgt_publish("written", "yes\n");
    else
        tgt_ready(extra);
    tgt_wait_verify(NULL);

    /* When the target shut down, the peer answers as soon as it has our bytes: its answer may
       follow. */
    if (target_shuts(o))
        CHECK(queued(s, SIOCINQ) >= PEER_BYTES, "bytes waiting in the receive queue: %d", queued(s, SIOCINQ));
    else
        CHECK_EQ("bytes waiting in the receive queue", queued(s, SIOCINQ), PEER_BYTES);
    CHECK_EQ("local port", local_port(s), lport);
    CHECK((fcntl(s, F_GETFL) & O_NONBLOCK) != 0, "O_NONBLOCK lost");
    int v = 0;
    socklen_t l = sizeof v;
    getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &l);
    CHECK_EQ("TCP_NODELAY", v, 1);
    check_stream("the peer's queued bytes", s, PEER_BYTES, SEED_PEER);
    if (peer_shuts_before_dump(o)) expect_eof("after the peer's queued bytes", s);
    if (!target_shuts(o) && send_pattern(s, MORE_OUT, SEED_MORE_OUT, 20000) != 0) FAIL("sending after the dump: %s", strerror(errno));
    if (!peer_shuts_before_dump(o)) check_stream("the peer's answer", s, MORE_IN, SEED_MORE_IN);
    if (o.finwait2) expect_eof("after the peer's answer", s);
    if (both_shut(o)) CHECK(wait_state(s, TCP_CLOSE, 20000), "the target's socket never closed: state %d", tcp_state(s));
    tgt_publish_result();
    tgt_idle();
}

/*
 * synsent: the connection is still being opened when the dump comes (the test drops the SYNs to
 * the peer's port): a non-blocking connect() left in SYN_SENT. After CTL/verify (and the rule
 * gone) the handshake completes and the streams run, the target's bytes sent only now.
 */
static void run_target_synsent(int port, struct opts o) {
    tgt_role = "target";
    struct sockaddr_storage sa;
    socklen_t salen = loopback(o.v6, port, &sa);
    int s = SYS(socket(sa.ss_family, SOCK_STREAM, 0));
    int big = 1 << 20, one = 1;
    SYS(setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, sizeof big));
    SYS(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    SYS(fcntl(s, F_SETFL, O_NONBLOCK));
    if (connect(s, (struct sockaddr *)&sa, salen) == 0 || errno != EINPROGRESS) tgt_die("connect did not stay in progress");
    if (tcp_state(s) != TCP_SYN_SENT) tgt_die("state %d after connect, not SYN_SENT", tcp_state(s));
    int lport = local_port(s);
    char extra[96];
    snprintf(extra, sizeof extra, "local_port=%d\npeer_port=%d\n", lport, port);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    CHECK(wait_for(s, POLLOUT, 30000), "the connection never opened (state %d)", tcp_state(s));
    int err = -1;
    socklen_t l = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
    CHECK_EQ("SO_ERROR after connecting", err, 0);
    CHECK_EQ("state after connecting", tcp_state(s), TCP_ESTABLISHED);
    CHECK_EQ("local port", local_port(s), lport);
    CHECK((fcntl(s, F_GETFL) & O_NONBLOCK) != 0, "O_NONBLOCK lost");
    int v = 0;
    l = sizeof v;
    getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &l);
    CHECK_EQ("TCP_NODELAY", v, 1);
    if (send_pattern(s, TARGET_BYTES, SEED_TARGET, 20000) != 0) FAIL("sending: %s", strerror(errno));
    check_stream("the peer's bytes", s, PEER_BYTES, SEED_PEER);
    if (send_pattern(s, MORE_OUT, SEED_MORE_OUT, 20000) != 0) FAIL("sending more: %s", strerror(errno));
    check_stream("the peer's answer", s, MORE_IN, SEED_MORE_IN);
    tgt_publish_result();
    tgt_idle();
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    struct opts o = {0};
    for (int i = 3; i < argc; i++) {
        o.go |= !strcmp(argv[i], "go");
        o.packet |= !strcmp(argv[i], "packet");
        o.v6 |= !strcmp(argv[i], "v6");
        if (!strcmp(argv[i], "mapped")) o.v6 = 2;
        o.peershut |= !strcmp(argv[i], "peershut");
        o.targetshut |= !strcmp(argv[i], "targetshut");
        o.finwait2 |= !strcmp(argv[i], "finwait2");
        o.lastack |= !strcmp(argv[i], "lastack");
        o.closing |= !strcmp(argv[i], "closing");
        o.synsent |= !strcmp(argv[i], "synsent");
    }
    if (argc >= 3 && !strcmp(argv[2], "peer")) run_peer(o);
    if (argc >= 4 && !strcmp(argv[2], "target") && o.synsent) run_target_synsent(atoi(argv[3]), o);
    if (argc >= 4 && !strcmp(argv[2], "target")) run_target(atoi(argv[3]), o);
    fprintf(stderr, "usage: %s CTL peer [OPTS] | CTL target PORT [OPTS]\n"
                    "OPTS: go packet v6 mapped peershut targetshut finwait2 lastack closing synsent\n", argv[0]);
    return 2;
}
