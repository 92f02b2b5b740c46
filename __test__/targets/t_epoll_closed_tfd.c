/*
 * An epoll set whose watched files were added through fds closed since, the files staying open
 * on other fds (an event loop that dup()s and closes, or moves fds around after registering):
 *   - a pipe's read end added as its first fd (data 0x1111), then moved to fd 50;
 *   - eventfd A added as fd 7 (EPOLLET, data 0x2222), then moved to fd 60; eventfd B then opened
 *     at fd 7 and added too (data 0x3333): two registrations under fd number 7;
 *   - eventfd C added as fd 61 and left there (data 0x4444), the ordinary case beside them.
 * Verification: with nothing written nothing is ready; then each file made ready in turn
 * wakes the set with its own data value and events (and only that one), A edge-triggered.
 */
#include "common.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>

static int ep;

static void add(int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev = {.events = events, .data.u64 = data};
    SYS(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
}

static int moved(int from, int to) {
    SYS(dup2(from, to));
    SYS(close(from));
    return to;
}

/* Waits (briefly) and expects exactly one ready registration with `data`. */
static void expect_ready(const char *what, uint64_t data, uint32_t events) {
    struct epoll_event got[4];
    int n = epoll_wait(ep, got, 4, 1000);
    if (n != 1) {
        FAIL("%s: %d registrations ready, want 1 (first data %#llx)", what, n,
             n > 0 ? (unsigned long long)got[0].data.u64 : 0ULL);
        return;
    }
    CHECK(got[0].data.u64 == data, "%s: data %#llx, want %#llx", what, (unsigned long long)got[0].data.u64,
          (unsigned long long)data);
    CHECK((got[0].events & events) == events, "%s: events %#x, want %#x", what, got[0].events, events);
}

static void expect_none(const char *what) {
    struct epoll_event got[4];
    int n = epoll_wait(ep, got, 4, 0);
    CHECK(n == 0, "%s: %d registrations ready (first data %#llx)", what, n,
          n > 0 ? (unsigned long long)got[0].data.u64 : 0ULL);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    /* Keep fd 7 free for the test's own use below. */
    int hold[8];
    for (int i = 0; i < 8; i++) hold[i] = SYS(open("/dev/null", O_RDONLY));
    ep = SYS(epoll_create1(EPOLL_CLOEXEC));
    ep = moved(ep, 40);

    int p[2];
    SYS(pipe(p));
    add(p[0], EPOLLIN, 0x1111);
    int rd = moved(p[0], 50), wr = moved(p[1], 51);

    for (int i = 0; i < 8; i++) close(hold[i]);
    int a = SYS(eventfd(0, EFD_NONBLOCK));
    a = moved(a, 7);
    add(a, EPOLLIN | EPOLLET, 0x2222);
    a = moved(a, 60);
    int b = SYS(eventfd(0, EFD_NONBLOCK));
    b = moved(b, 7);
    add(b, EPOLLIN, 0x3333);
    int c = SYS(eventfd(0, EFD_NONBLOCK));
    c = moved(c, 61);
    add(c, EPOLLIN, 0x4444);

    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    expect_none("before any write");
    uint64_t one = 1, v;
    CHECK(write(wr, "x", 1) == 1, "pipe write");
    expect_ready("pipe moved to fd 50", 0x1111, EPOLLIN);
    char ch;
    CHECK(read(rd, &ch, 1) == 1 && ch == 'x', "pipe read at fd 50");
    expect_none("pipe drained");
    CHECK(write(a, &one, 8) == 8, "eventfd A write");
    expect_ready("eventfd A moved to fd 60 (edge-triggered)", 0x2222, EPOLLIN);
    expect_none("eventfd A reported once (edge-triggered)");
    CHECK(read(a, &v, 8) == 8, "eventfd A read");
    CHECK(write(b, &one, 8) == 8, "eventfd B write");
    expect_ready("eventfd B at fd 7", 0x3333, EPOLLIN);
    CHECK(read(b, &v, 8) == 8, "eventfd B read");
    CHECK(write(c, &one, 8) == 8, "eventfd C write");
    expect_ready("eventfd C at fd 61", 0x4444, EPOLLIN);
    CHECK(read(c, &v, 8) == 8, "eventfd C read");
    expect_none("all drained");
    tgt_publish_result();
    tgt_idle();
}
