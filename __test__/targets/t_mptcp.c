/*
 * MPTCP sockets (IPPROTO_MPTCP, what Go >= 1.24 listens with), for `dump --tcp-close`:
 *   fd 3  an MPTCP listener on 127.0.0.1 (SO_REUSEADDR, TCP_NODELAY, backlog 8)
 *   fd 4  an MPTCP socket bound to 127.0.0.1, not listening
 *   fd 5  an MPTCP socket neither bound nor connected
 *   fd 6  an MPTCP client connected to fd 3, and fd 7 its accepted end (a full MPTCP connection)
 *   fd 8  the accepted end of a plain TCP client outside the tree (the test's), which sent
 *         "hello\n"; MPTCP listeners hand plain TCP clients over as TCP sockets
 * CTL/ready carries port= and bound_port=; CTL/accepted appears once fd 8 exists. Before each
 * verification the test publishes CTL/expect: "live" (never dumped, or dumped with
 * --leave-running) or "closed" (restored by `criu restore --tcp-close`).
 *
 * Both: addresses and ports kept, the listener's SO_ACCEPTCONN/SO_REUSEADDR/TCP_NODELAY, the
 * bound and unbound sockets still MPTCP. live: the listener is MPTCP, both connections carry
 * bytes, a new MPTCP client is accepted as MPTCP. closed: every connection is a shut-down TCP
 * socket (EOF on read, EPIPE on write), and the listener — restored as TCP, since criu restore
 * listens on IPPROTO_TCP sockets only — accepts a new MPTCP client, which falls back to TCP.
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    sa.sin_port = htons((uint16_t)port);
    return sa;
}

static int port_of(int fd) {
    struct sockaddr_in sa;
    socklen_t l = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &l) != 0) return -1;
    return ntohs(sa.sin_port);
}

static int int_opt(int fd, int level, int name) {
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, level, name, &v, &l) != 0) return -errno;
    return v;
}

static int readable(int fd, int timeout_ms, short *revents) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (revents) *revents = p.revents;
    return r == 1;
}

/* Sends `msg` from a to b and reads it back whole. */
static int carries(int a, int b, const char *msg) {
    size_t n = strlen(msg);
    char in[64] = {0};
    if (send(a, msg, n, MSG_NOSIGNAL) != (ssize_t)n) return 0;
    if (!readable(b, 3000, NULL)) return 0;
    return recv(b, in, sizeof in - 1, 0) == (ssize_t)n && !memcmp(in, msg, n);
}

/* A connection restored by criu restore --tcp-close: a TCP socket shut down both ways. */
static void check_closed(const char *what, int fd) {
    CHECK_EQ(what, int_opt(fd, SOL_SOCKET, SO_PROTOCOL), IPPROTO_TCP);
    short ev = 0;
    CHECK(readable(fd, 1000, &ev) && (ev & POLLHUP), "%s: not hung up (revents %#x)", what, ev);
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);
    CHECK(r == 0, "%s: read gave %zd (%s), want end of stream", what, r, r < 0 ? strerror(errno) : "data");
    r = send(fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    CHECK(r == -1 && errno == EPIPE, "%s: write gave %zd (%s), want EPIPE", what, r, strerror(errno));
}

/* A new MPTCP client of the listener; returns the accepted protocol (or -1). */
static int new_client(int ls, int port, int *client_mptcp) {
    struct sockaddr_in sa = loopback(port);
    int c = socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP);
    if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof sa) != 0) {
        FAIL("new MPTCP client: %s", strerror(errno));
        return -1;
    }
    if (!readable(ls, 3000, NULL)) {
        FAIL("the listener did not see the new client");
        close(c);
        return -1;
    }
    int a = accept(ls, NULL, NULL);
    int proto = a >= 0 ? int_opt(a, SOL_SOCKET, SO_PROTOCOL) : -1;
    CHECK(a >= 0 && carries(c, a, "ping") && carries(a, c, "pong"), "new connection carries no bytes");
    *client_mptcp = int_opt(c, SOL_SOCKET, SO_PROTOCOL);
    close(c);
    if (a >= 0) close(a);
    return proto;
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int one = 1;
    struct sockaddr_in any = loopback(0);
    int ls = SYS(socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP));
    SYS(setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    SYS(setsockopt(ls, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    SYS(bind(ls, (struct sockaddr *)&any, sizeof any));
    SYS(listen(ls, 8));
    int bound = SYS(socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP));
    SYS(bind(bound, (struct sockaddr *)&any, sizeof any));
    int unbound = SYS(socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP));
    int port = port_of(ls), bound_port = port_of(bound);
    struct sockaddr_in to = loopback(port);
    int cli = SYS(socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP));
    SYS(connect(cli, (struct sockaddr *)&to, sizeof to));
    int srv = SYS(accept(ls, NULL, NULL));
    if (int_opt(srv, SOL_SOCKET, SO_PROTOCOL) != IPPROTO_MPTCP) tgt_die("the in-tree connection fell back to TCP");
    if (ls != 3 || cli != 6 || srv != 7) tgt_die("unexpected fd numbers %d %d %d", ls, cli, srv);

    char extra[128];
    snprintf(extra, sizeof extra, "port=%d\nbound_port=%d\n", port, bound_port);
    tgt_ready(extra);
    if (!readable(ls, 20000, NULL)) tgt_die("no outside client within 20 s");
    int out = SYS(accept(ls, NULL, NULL));
    char hello[16] = {0};
    if (!readable(out, 5000, NULL) || recv(out, hello, sizeof hello - 1, 0) != 6 || strcmp(hello, "hello\n"))
        tgt_die("the outside client's hello: '%s'", hello);
    if (int_opt(out, SOL_SOCKET, SO_PROTOCOL) != IPPROTO_TCP) tgt_die("the outside client is not plain TCP");
    if (tgt_publish("accepted", "yes\n") != 0) tgt_die("publish accepted");
    tgt_wait_verify(NULL);

    char expect[32] = {0};
    tgt_read_ctl("expect", expect, sizeof expect);
    int closed = !strncmp(expect, "closed", 6);
    CHECK(closed || !strncmp(expect, "live", 4), "CTL/expect says '%s'", expect);

    CHECK_EQ("listener port", port_of(ls), port);
    CHECK_EQ("SO_ACCEPTCONN", int_opt(ls, SOL_SOCKET, SO_ACCEPTCONN), 1);
    CHECK_EQ("SO_REUSEADDR", int_opt(ls, SOL_SOCKET, SO_REUSEADDR), 1);
    CHECK_EQ("listener TCP_NODELAY", int_opt(ls, IPPROTO_TCP, TCP_NODELAY), 1);
    CHECK_EQ("bound socket protocol", int_opt(bound, SOL_SOCKET, SO_PROTOCOL), IPPROTO_MPTCP);
    CHECK_EQ("bound socket port", port_of(bound), bound_port);
    CHECK_EQ("bound socket SO_ACCEPTCONN", int_opt(bound, SOL_SOCKET, SO_ACCEPTCONN), 0);
    CHECK_EQ("unbound socket protocol", int_opt(unbound, SOL_SOCKET, SO_PROTOCOL), IPPROTO_MPTCP);
    CHECK_EQ("unbound socket port", port_of(unbound), 0);

    int client_proto = -1;
    int accepted_proto = new_client(ls, port, &client_proto);
    CHECK_EQ("new client's protocol", client_proto, IPPROTO_MPTCP);
    if (closed) {
        CHECK_EQ("listener protocol", int_opt(ls, SOL_SOCKET, SO_PROTOCOL), IPPROTO_TCP);
        /* a TCP listener: the MPTCP client fell back */
        CHECK_EQ("new connection's protocol", accepted_proto, IPPROTO_TCP);
        check_closed("in-tree MPTCP client", cli);
        check_closed("in-tree MPTCP server end", srv);
        check_closed("outside TCP client's server end", out);
    } else {
        CHECK_EQ("listener protocol", int_opt(ls, SOL_SOCKET, SO_PROTOCOL), IPPROTO_MPTCP);
        CHECK_EQ("new connection's protocol", accepted_proto, IPPROTO_MPTCP);
        CHECK(carries(cli, srv, "to server") && carries(srv, cli, "to client"), "the in-tree MPTCP connection carries no bytes");
        CHECK_EQ("in-tree server end protocol", int_opt(srv, SOL_SOCKET, SO_PROTOCOL), IPPROTO_MPTCP);
        CHECK(send(out, "live\n", 5, MSG_NOSIGNAL) == 5, "writing to the outside client: %s", strerror(errno));
    }
    tgt_publish_result();
    tgt_idle();
}
