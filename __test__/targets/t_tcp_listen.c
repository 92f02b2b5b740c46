/*
 * A listening TCP socket on 127.0.0.1 (ephemeral port, SO_REUSEADDR, backlog 16) and a bound UDP
 * socket, published in CTL/ready as tcp_port= and udp_port=. Verification is driven from outside:
 * after CTL/verify the test connects and sends "ping\n" (and a "dgram" datagram); the target
 * accepts, answers "pong PID\n" (and "dgram-ack"), and checks the sockets kept address, port,
 * listening state and options.
 *
 * tsdump-only: the reference CRIU 4.1.1 cannot dump inet sockets on this kernel
 * (getsockopt(SO_PASSCRED) on an inet socket fails with EOPNOTSUPP).
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int wait_readable(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1;
}

static int bound_port(int fd, struct sockaddr_in *sa) {
    socklen_t l = sizeof *sa;
    if (getsockname(fd, (struct sockaddr *)sa, &l) != 0) return -1;
    return ntohs(sa->sin_port);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ls = SYS(socket(AF_INET, SOCK_STREAM, 0));
    int one = 1;
    SYS(setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    SYS(bind(ls, (struct sockaddr *)&sa, sizeof sa));
    SYS(listen(ls, 16));
    int us = SYS(socket(AF_INET, SOCK_DGRAM, 0));
    SYS(bind(us, (struct sockaddr *)&sa, sizeof sa));
    int tcp_port = bound_port(ls, &sa), udp_port = bound_port(us, &sa);

    char extra[128];
    snprintf(extra, sizeof extra, "tcp_port=%d\nudp_port=%d\n", tcp_port, udp_port);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    struct sockaddr_in now;
    CHECK_EQ("TCP port", bound_port(ls, &now), tcp_port);
    CHECK(now.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "TCP address changed");
    CHECK_EQ("UDP port", bound_port(us, &now), udp_port);
    int v = 0;
    socklen_t l = sizeof v;
    getsockopt(ls, SOL_SOCKET, SO_ACCEPTCONN, &v, &l);
    CHECK_EQ("SO_ACCEPTCONN", v, 1);
    v = 0;
    getsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &v, &l);
    CHECK_EQ("SO_REUSEADDR", v, 1);

    if (!wait_readable(ls, 5000)) {
        FAIL("no TCP connection within 5 s");
    } else {
        int c = accept(ls, NULL, NULL);
        char in[16] = {0};
        ssize_t r = -1;
        if (c >= 0 && wait_readable(c, 3000)) r = read(c, in, sizeof in - 1);
        CHECK(r == 5 && !strcmp(in, "ping\n"), "TCP: got %zd bytes '%s'", r, in);
        char out[32];
        int n = snprintf(out, sizeof out, "pong %d\n", (int)getpid());
        CHECK(c >= 0 && write(c, out, (size_t)n) == n, "TCP reply: %s", strerror(errno));
        if (c >= 0) close(c);
    }
    if (!wait_readable(us, 5000)) {
        FAIL("no UDP datagram within 5 s");
    } else {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        char in[16] = {0};
        ssize_t r = recvfrom(us, in, sizeof in - 1, 0, (struct sockaddr *)&from, &fl);
        CHECK(r == 5 && !strcmp(in, "dgram"), "UDP: got %zd bytes '%s'", r, in);
        if (r > 0) sendto(us, "dgram-ack", 9, 0, (struct sockaddr *)&from, fl);
    }
    tgt_publish_result();
    tgt_idle();
}
