/*
 * Unix socketpairs with queued data:
 *   S1 stream, in-process: 10 000 bytes queued one way, 300 the other; S1[1] SO_RCVBUF set
 *   S2 dgram, in-process: datagrams of 100, 1 and 2 000 bytes queued
 *   S3 seqpacket, in-process: messages of 50 and 500 bytes queued
 *   S4 stream, parent <-> child: 7 000 bytes queued to the child, 70 to the parent
 *   S5 stream, in-process: 100 bytes queued, then the sender shut down writing
 * Verification: each socket still has its type and peer; each reader gets exactly its bytes (for
 * dgram/seqpacket with the message boundaries) and then nothing; S5's reader sees EOF after its
 * data; SO_RCVBUF kept; every pair still carries new data both ways after restore.
 */
#include "common.h"
#include <sys/socket.h>
#include <sys/wait.h>

static uint8_t buf[16384];

static void send_pattern(int fd, size_t len, uint32_t seed) {
    static uint8_t out[16384];
    tgt_fill(out, len, seed);
    if (send(fd, out, len, 0) != (ssize_t)len) tgt_die("send %zu bytes on fd %d", len, fd);
}

/* Stream: collect len bytes (non-blocking, with a deadline), check, then expect nothing more. */
static void expect_stream(const char *what, int fd, size_t len, uint32_t seed, int eof_after) {
    size_t got = 0;
    long long deadline = tgt_now_ms() + 2000;
    while (got < len && tgt_now_ms() < deadline) {
        ssize_t r = recv(fd, buf + got, len - got, MSG_DONTWAIT);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0)
            break;
        else if (errno == EAGAIN)
            tgt_sleep_ms(1);
        else {
            FAIL("%s: recv: %s", what, strerror(errno));
            return;
        }
    }
    if (got != len) FAIL("%s: got %zu bytes, want %zu", what, got, len);
    long off = tgt_check_fill(buf, got, seed);
    if (off >= 0) FAIL("%s: byte %ld differs", what, off);
    ssize_t r = recv(fd, buf, 1, MSG_DONTWAIT);
    if (eof_after)
        CHECK(r == 0, "%s: expected EOF after the data, recv -> %zd", what, r);
    else
        CHECK(r < 0 && errno == EAGAIN, "%s: unexpected extra data (recv -> %zd)", what, r);
}

/* Message sockets: one recv per message; each must have its own length and content. */
static void expect_messages(const char *what, int fd, const size_t *lens, const uint32_t *seeds, int n) {
    for (int i = 0; i < n; i++) {
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
        if (r != (ssize_t)lens[i]) {
            FAIL("%s: message %d has %zd bytes, want %zu", what, i, r, lens[i]);
            return;
        }
        if (tgt_check_fill(buf, lens[i], seeds[i]) >= 0) FAIL("%s: message %d differs", what, i);
    }
    ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    CHECK(r < 0 && errno == EAGAIN, "%s: unexpected extra message (%zd bytes)", what, r);
}

static void expect_type(int fd, int type) {
    int t = 0;
    socklen_t l = sizeof t;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &l) != 0)
        FAIL("fd %d is not a socket after restore: %s", fd, strerror(errno));
    else if (t != type)
        FAIL("fd %d socket type %d, want %d", fd, t, type);
}

static void ping(const char *what, int a, int b) {
    char in[16] = {0};
    CHECK(send(a, "ping-after", 10, 0) == 10, "%s: send after restore: %s", what, strerror(errno));
    long long deadline = tgt_now_ms() + 2000;
    ssize_t r;
    while ((r = recv(b, in, sizeof in, MSG_DONTWAIT)) < 0 && errno == EAGAIN && tgt_now_ms() < deadline)
        tgt_sleep_ms(1);
    CHECK(r == 10 && !memcmp(in, "ping-after", 10), "%s: no data after restore (%zd)", what, r);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int s1[2], s2[2], s3[2], s4[2], s5[2];
    SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, s4));
    pid_t child = SYS(fork());
    if (child == 0) {
        tgt_role = "child";
        close(s4[0]);
        send_pattern(s4[1], 70, 57);
        tgt_wait_verify(NULL);
        expect_type(s4[1], SOCK_STREAM);
        expect_stream("S4 parent->child", s4[1], 7000, 56, 0);
        tgt_publish("s4-drained", "1\n");
        /* Echo one message from the parent back, proving the pair still connects us. */
        char in[16] = {0};
        long long deadline = tgt_now_ms() + 2000;
        ssize_t r;
        while ((r = recv(s4[1], in, sizeof in, MSG_DONTWAIT)) < 0 && errno == EAGAIN &&
               tgt_now_ms() < deadline)
            tgt_sleep_ms(1);
        CHECK(r == 10, "S4: no message from the parent after restore (%zd)", r);
        if (r > 0 && send(s4[1], in, (size_t)r, 0) != r) FAIL("S4: echo: %s", strerror(errno));
        tgt_publish_part();
        tgt_idle();
    }
    close(s4[1]);
    send_pattern(s4[0], 7000, 56);

    SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, s1));
    int rcvbuf = 98304;
    SYS(setsockopt(s1[1], SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf));
    socklen_t rl = sizeof rcvbuf;
    SYS(getsockopt(s1[1], SOL_SOCKET, SO_RCVBUF, &rcvbuf, &rl));
    send_pattern(s1[0], 10000, 50);
    send_pattern(s1[1], 300, 51);

    SYS(socketpair(AF_UNIX, SOCK_DGRAM, 0, s2));
    static const size_t dlens[] = {100, 1, 2000};
    static const uint32_t dseeds[] = {52, 53, 54};
    for (int i = 0; i < 3; i++) send_pattern(s2[0], dlens[i], dseeds[i]);

    SYS(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, s3));
    static const size_t qlens[] = {50, 500};
    static const uint32_t qseeds[] = {58, 59};
    for (int i = 0; i < 2; i++) send_pattern(s3[1], qlens[i], qseeds[i]);

    SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, s5));
    send_pattern(s5[0], 100, 60);
    SYS(shutdown(s5[0], SHUT_WR));

    char extra[64];
    snprintf(extra, sizeof extra, "child=%d\n", child);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    expect_type(s1[0], SOCK_STREAM);
    expect_type(s2[1], SOCK_DGRAM);
    expect_type(s3[0], SOCK_SEQPACKET);
    expect_type(s4[0], SOCK_STREAM);
    int now_rcv = 0;
    rl = sizeof now_rcv;
    getsockopt(s1[1], SOL_SOCKET, SO_RCVBUF, &now_rcv, &rl);
    CHECK_EQ("S1[1] SO_RCVBUF", now_rcv, rcvbuf);

    expect_stream("S1 0->1", s1[1], 10000, 50, 0);
    expect_stream("S1 1->0", s1[0], 300, 51, 0);
    expect_messages("S2 dgram", s2[1], dlens, dseeds, 3);
    expect_messages("S3 seqpacket", s3[0], qlens, qseeds, 2);
    expect_stream("S4 child->parent", s4[0], 70, 57, 0);
    expect_stream("S5 after shutdown", s5[1], 100, 60, 1);
    CHECK(send(s5[0], "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE, "S5: shut-down writer can send again");

    ping("S1 0->1", s1[0], s1[1]);
    ping("S1 1->0", s1[1], s1[0]);
    ping("S2", s2[0], s2[1]);
    ping("S3", s3[1], s3[0]);
    ping("S5 reverse", s5[1], s5[0]);

    long long deadline = tgt_now_ms() + 2000;
    while (!tgt_ctl_exists("s4-drained") && tgt_now_ms() < deadline) tgt_sleep_ms(1);
    CHECK(send(s4[0], "ping-after", 10, 0) == 10, "S4 send: %s", strerror(errno));
    char in[16] = {0};
    ssize_t r;
    while ((r = recv(s4[0], in, sizeof in, MSG_DONTWAIT)) < 0 && errno == EAGAIN && tgt_now_ms() < deadline)
        tgt_sleep_ms(1);
    CHECK(r == 10 && !memcmp(in, "ping-after", 10), "S4: no echo from the child (%zd)", r);

    int st;
    CHECK(waitpid(child, &st, WNOHANG) == 0, "child %d gone", child);
    static const char *const roles[] = {"child"};
    tgt_collect_parts(roles, 1, 3000);
    tgt_publish_result();
    tgt_idle();
}
