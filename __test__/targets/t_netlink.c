/*
 * Netlink sockets a daemon holds: NETLINK_ROUTE bound to its port id and listening to a
 * multicast group (RTNLGRP_MPLS_ROUTE: quiet on a test machine), with SO_RCVBUF set; a second
 * NETLINK_ROUTE socket never bound; a NETLINK_GENERIC socket bound to an explicit port id and
 * connected to the kernel.
 * Verification: same protocols, port ids and groups (getsockname, NETLINK_LIST_MEMBERSHIPS),
 * SO_RCVBUF kept, and every socket still talks to the kernel: an RTM_GETLINK dump request is
 * answered with RTM_NEWLINK messages (the unbound one is bound by the kernel on first send), a
 * CTRL_CMD_GETFAMILY request over the generic one is answered.
 * With the argument "unread", the route socket also has an RTM_GETLINK answer waiting unread
 * at the dump (which a dumper must refuse); verification first reads it.
 */
#include "common.h"
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#define GROUP RTNLGRP_MPLS_ROUTE

static uint32_t portid_of(int s, uint32_t *groups) {
    struct sockaddr_nl a;
    socklen_t l = sizeof a;
    memset(&a, 0, sizeof a);
    if (getsockname(s, (struct sockaddr *)&a, &l) != 0) return 0;
    if (groups) *groups = a.nl_groups;
    return a.nl_pid;
}

/* Sends `req` (unless NULL) and waits (up to 2 s) for a reply of type `want`; 0 if one came. */
static int ask(int s, const void *req, size_t len, int want) {
    if (req && send(s, req, len, 0) != (ssize_t)len) return -1;
    struct timeval tv = {2, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static char buf[65536];
    int got = -1, done = 0;
    while (!done) {
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n <= 0) break;
        for (struct nlmsghdr *h = (void *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == want) got = 0;
            if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR || !(h->nlmsg_flags & NLM_F_MULTI)) done = 1;
        }
    }
    struct timeval none = {0, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    return got;
}

static struct {
    struct nlmsghdr h;
    struct ifinfomsg i;
} getlink_req = {{NLMSG_LENGTH(sizeof(struct ifinfomsg)), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0}, {.ifi_family = AF_UNSPEC}};

static int getlink(int s) { return ask(s, &getlink_req, sizeof getlink_req, RTM_NEWLINK); }

static int getfamily(int s) {
    struct {
        struct nlmsghdr h;
        struct genlmsghdr g;
        struct nlattr a;
        char name[8];
    } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = GENL_ID_CTRL;
    req.h.nlmsg_flags = NLM_F_REQUEST;
    req.g.cmd = CTRL_CMD_GETFAMILY;
    req.g.version = 1;
    req.a.nla_type = CTRL_ATTR_FAMILY_NAME;
    req.a.nla_len = NLA_HDRLEN + 8;
    memcpy(req.name, "nlctrl", 7);
    return ask(s, &req, sizeof req, GENL_ID_CTRL);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int route = SYS(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    struct sockaddr_nl a = {.nl_family = AF_NETLINK};
    SYS(bind(route, (struct sockaddr *)&a, sizeof a));
    int g = GROUP;
    SYS(setsockopt(route, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof g));
    int rcvbuf = 262144;
    SYS(setsockopt(route, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf));
    int unbound = SYS(socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE));
    int gen = SYS(socket(AF_NETLINK, SOCK_DGRAM, NETLINK_GENERIC));
    uint32_t genport = (uint32_t)getpid() + 0x40000000u;
    struct sockaddr_nl b = {.nl_family = AF_NETLINK, .nl_pid = genport};
    SYS(bind(gen, (struct sockaddr *)&b, sizeof b));
    struct sockaddr_nl k = {.nl_family = AF_NETLINK};
    SYS(connect(gen, (struct sockaddr *)&k, sizeof k));
    SYS(dup2(route, 10));
    SYS(dup2(unbound, 11));
    SYS(dup2(gen, 12));
    close(route);
    close(unbound);
    close(gen);
    uint32_t routeport = portid_of(10, NULL);
    int bufwas = 0;
    socklen_t bl = sizeof bufwas;
    SYS(getsockopt(10, SOL_SOCKET, SO_RCVBUF, &bufwas, &bl));
    int unread = argc > 2 && strcmp(argv[2], "unread") == 0;
    if (unread && send(10, &getlink_req, sizeof getlink_req, 0) != (ssize_t)sizeof getlink_req) tgt_die("send");
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    if (unread) CHECK(ask(10, NULL, 0, RTM_NEWLINK) == 0, "the unread RTM_NEWLINK answer is gone");

    uint32_t groups = 0;
    CHECK_EQ("route port id", portid_of(10, &groups), routeport);
    CHECK_EQ("route groups (getsockname)", groups, 1u << (GROUP - 1));
    uint32_t member[4] = {0};
    socklen_t ml = sizeof member;
    VSYS(getsockopt(10, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, member, &ml));
    CHECK(member[0] == 1u << (GROUP - 1), "route memberships %#x", member[0]);
    int buf = 0;
    bl = sizeof buf;
    VSYS(getsockopt(10, SOL_SOCKET, SO_RCVBUF, &buf, &bl));
    CHECK_EQ("route SO_RCVBUF", buf, bufwas);
    int proto = -1;
    socklen_t pl = sizeof proto;
    VSYS(getsockopt(11, SOL_SOCKET, SO_PROTOCOL, &proto, &pl));
    CHECK_EQ("unbound protocol", proto, NETLINK_ROUTE);
    CHECK_EQ("unbound port id (none yet)", portid_of(11, NULL), 0);
    pl = sizeof proto;
    VSYS(getsockopt(12, SOL_SOCKET, SO_PROTOCOL, &proto, &pl));
    CHECK_EQ("generic protocol", proto, NETLINK_GENERIC);
    CHECK_EQ("generic port id", portid_of(12, NULL), genport);
    CHECK(getlink(10) == 0, "route socket: no RTM_NEWLINK answer");
    CHECK(getlink(11) == 0, "unbound socket: no RTM_NEWLINK answer");
    CHECK(getfamily(12) == 0, "generic socket: no CTRL_CMD_GETFAMILY answer");
    tgt_publish_result();
    tgt_idle();
}
