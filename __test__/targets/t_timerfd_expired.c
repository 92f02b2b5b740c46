/*
 * A periodic timerfd (20 ms) that keeps expiring while nobody reads it: at dump time it has
 * expired, its expirations are counted but unread, and the kernel only re-arms it on the next
 * read. Verification: the interval is kept, the unread expirations are readable, and it keeps
 * ticking after restore (polled with a deadline, never a blocking read).
 *
 * The reference CRIU 4.1.1 records such a timer's it_value as 0 and so restores it disarmed;
 * targets.test.ts pins that known failure.
 */
#include "common.h"
#include <poll.h>
#include <sys/timerfd.h>

static long long ms_of(struct timespec ts) { return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000; }

/* Expirations readable within timeout_ms, or 0. */
static uint64_t ticks_within(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    uint64_t n = 0;
    if (poll(&p, 1, timeout_ms) == 1 && read(fd, &n, sizeof n) == sizeof n) return n;
    return 0;
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int tf = SYS(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK));
    struct itimerspec p20 = {{0, 20000000}, {0, 20000000}};
    SYS(timerfd_settime(tf, 0, &p20, NULL));
    tgt_sleep_ms(50); /* expired at least twice, unread */
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    struct itimerspec its;
    if (VSYS(timerfd_gettime(tf, &its)) == 0) CHECK_EQ("interval ms", ms_of(its.it_interval), 20);
    uint64_t first = ticks_within(tf, 100);
    CHECK(first >= 1, "no expirations readable after restore");
    uint64_t later = ticks_within(tf, 200);
    CHECK(later >= 1, "timerfd stopped ticking after restore (armed: %lld ms left)", ms_of(its.it_value));
    tgt_publish_result();
    tgt_idle();
}
