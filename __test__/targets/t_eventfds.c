/*
 * The "anonymous inode" descriptors:
 *   E1 eventfd, counter 7, EFD_NONBLOCK|EFD_CLOEXEC     E2 eventfd, counter 3
 *   SFD signalfd for {SIGUSR2, SIGRTMIN+4} (blocked), SIGUSR2 pending with value 77
 *   TF1 timerfd MONOTONIC 20 ms period, first expiry 600 s away
 *   TF2 timerfd REALTIME one-shot 1000 s   TF3 disarmed
 * (A periodic timerfd that has expired unread, and EFD_SEMAPHORE, are separate targets:
 * t_timerfd_expired and t_eventfd_semaphore.)
 *   EP epoll watching E1 (EPOLLIN, data 0xdeadbeef01), a pipe with 1 byte (EPOLLIN|EPOLLET,
 *      data 0x1234) and SFD (EPOLLIN, data 0x5f); E2 is deliberately not watched
 * Verification: epoll reports exactly those three with their data and still holds the
 * registrations (ADD -> EEXIST); eventfd counters kept; signalfd delivers the pending SIGUSR2
 * with its value and still watches its mask; timerfds keep interval and remaining time and still
 * work when re-armed; descriptor flags kept.
 */
#include "common.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

static long long ms_of(struct timespec ts) { return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000; }

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int e1 = SYS(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    uint64_t v = 7;
    SYS(write(e1, &v, sizeof v));
    int e2 = SYS(eventfd(3, EFD_NONBLOCK));

    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGUSR2);
    sigaddset(&ss, SIGRTMIN + 4);
    SYS(sigprocmask(SIG_BLOCK, &ss, NULL));
    int sfd = SYS(signalfd(-1, &ss, SFD_NONBLOCK));
    SYS(sigqueue(getpid(), SIGUSR2, (union sigval){.sival_int = 77}));

    int tf1 = SYS(timerfd_create(CLOCK_MONOTONIC, 0));
    int tf2 = SYS(timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK));
    int tf3 = SYS(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK));
    struct itimerspec p20 = {{0, 20000000}, {600, 0}}, once = {{0, 0}, {1000, 0}};
    SYS(timerfd_settime(tf1, 0, &p20, NULL));
    SYS(timerfd_settime(tf2, 0, &once, NULL));

    int p[2];
    SYS(pipe(p));
    SYS(write(p[1], "e", 1));

    int ep = SYS(epoll_create1(0));
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xdeadbeef01ULL};
    SYS(epoll_ctl(ep, EPOLL_CTL_ADD, e1, &ev));
    ev = (struct epoll_event){.events = EPOLLIN | EPOLLET, .data.u64 = 0x1234};
    SYS(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev));
    ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = 0x5f};
    SYS(epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev));

    char extra[128];
    snprintf(extra, sizeof extra, "eventfd=%d\nsignalfd=%d\nepoll=%d\n", e1, sfd, ep);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    struct epoll_event out[8];
    int n = epoll_wait(ep, out, 8, 0);
    int seen_e1 = 0, seen_p = 0, seen_sfd = 0;
    for (int i = 0; i < n; i++) {
        if (out[i].data.u64 == 0xdeadbeef01ULL) seen_e1++;
        else if (out[i].data.u64 == 0x1234) seen_p++;
        else if (out[i].data.u64 == 0x5f) seen_sfd++;
        else FAIL("epoll reported unknown data 0x%llx", (unsigned long long)out[i].data.u64);
    }
    CHECK(n == 3 && seen_e1 == 1 && seen_p == 1 && seen_sfd == 1,
          "epoll_wait gave %d events (eventfd %d, pipe %d, signalfd %d)", n, seen_e1, seen_p, seen_sfd);
    ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = 1};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, e1, &ev) < 0 && errno == EEXIST, "epoll lost its eventfd registration");
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) < 0 && errno == EEXIST, "epoll lost its pipe registration");
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, e2, &ev) == 0, "eventfd 2 was registered in epoll: %s", strerror(errno));
    /* Edge-triggered: with no new data the pipe is not reported again. */
    epoll_ctl(ep, EPOLL_CTL_DEL, e2, NULL);
    n = epoll_wait(ep, out, 8, 0);
    for (int i = 0; i < n; i++) CHECK(out[i].data.u64 != 0x1234, "EPOLLET pipe reported twice");

    CHECK(fcntl(e1, F_GETFD) & FD_CLOEXEC, "eventfd lost FD_CLOEXEC");
    CHECK(fcntl(e1, F_GETFL) & O_NONBLOCK, "eventfd lost O_NONBLOCK");
    CHECK(!(fcntl(tf1, F_GETFL) & O_NONBLOCK), "timerfd 1 gained O_NONBLOCK");
    uint64_t got = 0;
    CHECK(read(e1, &got, 8) == 8 && got == 7, "eventfd counter %llu, want 7", (unsigned long long)got);
    CHECK(read(e1, &got, 8) < 0 && errno == EAGAIN, "eventfd not empty after reading");
    CHECK(read(e2, &got, 8) == 8 && got == 3, "eventfd 2 counter %llu, want 3", (unsigned long long)got);

    struct signalfd_siginfo si;
    ssize_t r = read(sfd, &si, sizeof si);
    CHECK(r == sizeof si && si.ssi_signo == SIGUSR2 && si.ssi_int == 77 && si.ssi_code == SI_QUEUE,
          "signalfd read %zd signo %u value %d code %d", r, si.ssi_signo, si.ssi_int, si.ssi_code);
    CHECK(read(sfd, &si, sizeof si) < 0 && errno == EAGAIN, "signalfd had more than one signal");
    sigqueue(getpid(), SIGRTMIN + 4, (union sigval){.sival_int = 5});
    r = read(sfd, &si, sizeof si);
    CHECK(r == sizeof si && (int)si.ssi_signo == SIGRTMIN + 4 && si.ssi_int == 5,
          "signalfd mask lost SIGRTMIN+4 (read %zd signo %u)", r, si.ssi_signo);

    struct itimerspec its;
    if (VSYS(timerfd_gettime(tf1, &its)) == 0) {
        CHECK_EQ("timerfd 1 interval ms", ms_of(its.it_interval), 20);
        /* counted down, not reset; minutes of slack for a slow (emulated) round trip */
        CHECK(ms_of(its.it_value) > 480000 && ms_of(its.it_value) <= 600000, "timerfd 1 remaining %lld ms",
              ms_of(its.it_value));
    }
    struct itimerspec soon = {{0, 10000000}, {0, 10000000}};
    if (VSYS(timerfd_settime(tf1, 0, &soon, NULL)) == 0) {
        tgt_sleep_ms(50);
        got = 0;
        CHECK(read(tf1, &got, 8) == 8 && got >= 2, "re-armed timerfd 1 ticked %llu times in 50 ms",
              (unsigned long long)got);
    }
    if (VSYS(timerfd_gettime(tf2, &its)) == 0)
        CHECK(ms_of(its.it_value) > 600000 && ms_of(its.it_value) <= 1000000 && ms_of(its.it_interval) == 0,
              "timerfd 2 remaining %lld ms", ms_of(its.it_value));
    CHECK(read(tf2, &got, 8) < 0 && errno == EAGAIN, "timerfd 2 expired early");
    if (VSYS(timerfd_gettime(tf3, &its)) == 0)
        CHECK(ms_of(its.it_value) == 0 && ms_of(its.it_interval) == 0, "timerfd 3 got armed");

    tgt_publish_result();
    tgt_idle();
}
