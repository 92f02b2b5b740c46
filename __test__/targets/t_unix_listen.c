/*
 * Path-bound unix sockets: a listening stream socket at CTL/listen.sock with one connection
 * accepted (data queued both ways) and one client socket connected; a bound dgram socket at
 * CTL/dgram.sock with two datagrams queued from an unbound sender.
 * Verification: the listener is still bound to its path and listening (a new connection made
 * after restore is accepted); the accepted pair still has its queued data; the dgram socket keeps
 * its address, its queued datagrams, and receives new ones.
 */
#include "common.h"
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static socklen_t addr_of(struct sockaddr_un *sa, const char *path) {
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    snprintf(sa->sun_path, sizeof sa->sun_path, "%s", path);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(sa->sun_path) + 1);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char lpath[PATH_MAX + 32], dpath[PATH_MAX + 32];
    snprintf(lpath, sizeof lpath, "%s/listen.sock", tgt_ctl);
    snprintf(dpath, sizeof dpath, "%s/dgram.sock", tgt_ctl);
    if (strlen(lpath) >= sizeof(((struct sockaddr_un *)0)->sun_path)) tgt_die("CTL path too long for a unix socket");
    struct sockaddr_un sa;
    int ls = SYS(socket(AF_UNIX, SOCK_STREAM, 0));
    SYS(bind(ls, (struct sockaddr *)&sa, addr_of(&sa, lpath)));
    SYS(listen(ls, 8));
    int cl = SYS(socket(AF_UNIX, SOCK_STREAM, 0));
    SYS(connect(cl, (struct sockaddr *)&sa, addr_of(&sa, lpath)));
    int acc = SYS(accept(ls, NULL, NULL));
    SYS(send(cl, "client->server", 14, 0));
    SYS(send(acc, "server->client!", 15, 0));

    int ds = SYS(socket(AF_UNIX, SOCK_DGRAM, 0));
    SYS(bind(ds, (struct sockaddr *)&sa, addr_of(&sa, dpath)));
    int snd = SYS(socket(AF_UNIX, SOCK_DGRAM, 0));
    SYS(sendto(snd, "one", 3, 0, (struct sockaddr *)&sa, addr_of(&sa, dpath)));
    SYS(sendto(snd, "second", 6, 0, (struct sockaddr *)&sa, addr_of(&sa, dpath)));
    close(snd);

    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    struct sockaddr_un got;
    socklen_t gl = sizeof got;
    if (VSYS(getsockname(ls, (struct sockaddr *)&got, &gl)) == 0)
        CHECK(!strcmp(got.sun_path, lpath), "listener bound to '%s'", got.sun_path);
    int v = 0;
    socklen_t vl = sizeof v;
    getsockopt(ls, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl);
    CHECK_EQ("listener SO_ACCEPTCONN", v, 1);
    char in[32] = {0};
    CHECK(recv(acc, in, sizeof in, MSG_DONTWAIT) == 14 && !memcmp(in, "client->server", 14), "accepted socket lost its data");
    memset(in, 0, sizeof in);
    CHECK(recv(cl, in, sizeof in, MSG_DONTWAIT) == 15 && !memcmp(in, "server->client!", 15), "client socket lost its data");
    CHECK(send(cl, "again", 5, 0) == 5 && recv(acc, in, sizeof in, 0) == 5, "connected pair does not carry new data");

    int nc = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(nc >= 0 && connect(nc, (struct sockaddr *)&sa, addr_of(&sa, lpath)) == 0,
          "cannot connect to the restored listener: %s", strerror(errno));
    struct pollfd p = {.fd = ls, .events = POLLIN};
    CHECK(poll(&p, 1, 2000) == 1, "restored listener did not see the new connection");
    int a2 = accept(ls, NULL, NULL);
    CHECK(a2 >= 0, "accept after restore: %s", strerror(errno));
    if (a2 >= 0) close(a2);
    if (nc >= 0) close(nc);

    memset(in, 0, sizeof in);
    CHECK(recv(ds, in, sizeof in, MSG_DONTWAIT) == 3 && !memcmp(in, "one", 3), "dgram 1 lost");
    memset(in, 0, sizeof in);
    CHECK(recv(ds, in, sizeof in, MSG_DONTWAIT) == 6 && !memcmp(in, "second", 6), "dgram 2 lost");
    CHECK(recv(ds, in, sizeof in, MSG_DONTWAIT) < 0 && errno == EAGAIN, "extra datagram");
    int s2 = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(s2 >= 0 && sendto(s2, "new", 3, 0, (struct sockaddr *)&sa, addr_of(&sa, dpath)) == 3,
          "cannot send to the restored dgram socket: %s", strerror(errno));
    CHECK(recv(ds, in, sizeof in, MSG_DONTWAIT) == 3, "restored dgram socket did not receive");
    if (s2 >= 0) close(s2);
    tgt_publish_result();
    tgt_idle();
}
