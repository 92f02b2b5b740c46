/*
 * Interval timers and POSIX timers, armed and ticking at dump time:
 *   ITIMER_REAL 50 ms period (SIGALRM)   ITIMER_VIRTUAL 20 ms period (SIGVTALRM)
 *   ITIMER_PROF one-shot 30 s (never reached)
 *   T1 CLOCK_MONOTONIC 30 ms period -> SIGRTMIN+2 with value 4242
 *   T2 CLOCK_REALTIME one-shot 1000 s -> SIGRTMIN+3     T3 CLOCK_MONOTONIC created, never armed
 * Verification: intervals unchanged, one-shot remaining times plausible (counted down, not reset
 * past their start), the same timer ids still valid, and every periodic timer keeps firing after
 * restore (REAL and T1 over 200 ms of sleep, VIRTUAL over 400 ms of CPU burn) with the right
 * siginfo (SI_TIMER, value 4242, timer id).
 */
#include "common.h"
#include <sys/time.h>

static volatile int alrm_count, vt_count, t1_count, t1_bad, t2_count;
static timer_t t1, t2, t3;

static void on_alrm(int s) { (void)s; alrm_count++; }
static void on_vt(int s) { (void)s; vt_count++; }
static void on_t1(int s, siginfo_t *si, void *uc) {
    (void)s;
    (void)uc;
    if (si->si_code != SI_TIMER || si->si_value.sival_int != 4242 ||
        si->si_timerid != (int)(intptr_t)t1)
        t1_bad++;
    t1_count++;
}
static void on_t2(int s) { (void)s; t2_count++; }

static void handle(int sig, void *fn, int siginfo) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (siginfo)
        sa.sa_sigaction = fn;
    else
        sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART | (siginfo ? SA_SIGINFO : 0);
    sigemptyset(&sa.sa_mask);
    SYS(sigaction(sig, &sa, NULL));
}

static timer_t make_timer(clockid_t clk, int notify, int sig, int value) {
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = notify;
    ev.sigev_signo = sig;
    ev.sigev_value.sival_int = value;
    timer_t id;
    SYS(timer_create(clk, &ev, &id));
    return id;
}

static long long ms_of(struct timespec ts) { return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000; }
static long long ms_of_tv(struct timeval tv) { return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000; }

static void burn_cpu_ms(long ms) {
    struct timespec start, now;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &start);
    volatile uint64_t x = 1;
    do {
        for (int i = 0; i < 100000; i++) x = x * 2862933555777941757ULL + 3037000493ULL;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    } while (ms_of(now) - ms_of(start) < ms);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    handle(SIGALRM, (void *)on_alrm, 0);
    handle(SIGVTALRM, (void *)on_vt, 0);
    handle(SIGRTMIN + 2, (void *)on_t1, 1);
    handle(SIGRTMIN + 3, (void *)on_t2, 0);

    struct itimerval real = {{0, 50000}, {0, 50000}}, virt = {{0, 20000}, {0, 20000}},
                     prof = {{0, 0}, {30, 0}};
    SYS(setitimer(ITIMER_REAL, &real, NULL));
    SYS(setitimer(ITIMER_VIRTUAL, &virt, NULL));
    SYS(setitimer(ITIMER_PROF, &prof, NULL));

    t1 = make_timer(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 2, 4242);
    t2 = make_timer(CLOCK_REALTIME, SIGEV_SIGNAL, SIGRTMIN + 3, 0);
    t3 = make_timer(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0);
    struct itimerspec p30 = {{0, 30000000}, {0, 30000000}}, once1000 = {{0, 0}, {1000, 0}};
    SYS(timer_settime(t1, 0, &p30, NULL));
    SYS(timer_settime(t2, 0, &once1000, NULL));

    /* until each periodic timer fired once: on a loaded machine 50 ms of CPU may come late, or
       be charged to the tick that ITIMER_VIRTUAL samples only in part */
    long long deadline = tgt_now_ms() + 10000;
    do {
        burn_cpu_ms(50);
        tgt_sleep_ms(50);
    } while ((!alrm_count || !vt_count || !t1_count) && tgt_now_ms() < deadline);
    if (!alrm_count || !vt_count || !t1_count)
        tgt_die("timers did not fire before ready (real %d, virtual %d, t1 %d)", (int)alrm_count, (int)vt_count, (int)t1_count);

    char extra[128];
    snprintf(extra, sizeof extra, "t1=%d\nt2=%d\nt3=%d\n", (int)(intptr_t)t1, (int)(intptr_t)t2,
             (int)(intptr_t)t3);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    struct itimerval iv;
    if (VSYS(getitimer(ITIMER_REAL, &iv)) == 0) {
        CHECK_EQ("ITIMER_REAL interval us", ms_of_tv(iv.it_interval) * 1000, 50000);
        CHECK(ms_of_tv(iv.it_value) <= 50, "ITIMER_REAL value %lld ms", ms_of_tv(iv.it_value));
    }
    if (VSYS(getitimer(ITIMER_VIRTUAL, &iv)) == 0)
        CHECK_EQ("ITIMER_VIRTUAL interval us", ms_of_tv(iv.it_interval) * 1000, 20000);
    if (VSYS(getitimer(ITIMER_PROF, &iv)) == 0) {
        CHECK_EQ("ITIMER_PROF interval", ms_of_tv(iv.it_interval), 0);
        CHECK(ms_of_tv(iv.it_value) > 25000 && ms_of_tv(iv.it_value) <= 30000,
              "ITIMER_PROF remaining %lld ms", ms_of_tv(iv.it_value));
    }
    struct itimerspec its;
    if (VSYS(timer_gettime(t1, &its)) == 0) {
        CHECK_EQ("T1 interval ms", ms_of(its.it_interval), 30);
        CHECK(ms_of(its.it_value) <= 30, "T1 value %lld ms", ms_of(its.it_value));
    }
    if (VSYS(timer_gettime(t2, &its)) == 0) {
        CHECK_EQ("T2 interval", ms_of(its.it_interval), 0);
        /* counted down, not reset; minutes of slack for a slow (emulated) round trip */
        CHECK(ms_of(its.it_value) > 600000 && ms_of(its.it_value) <= 1000000, "T2 remaining %lld ms",
              ms_of(its.it_value));
    }
    if (VSYS(timer_gettime(t3, &its)) == 0)
        CHECK(ms_of(its.it_value) == 0 && ms_of(its.it_interval) == 0, "T3 got armed");

    int a0 = alrm_count, t0 = t1_count, v0 = vt_count;
    tgt_sleep_ms(200);
    CHECK(alrm_count - a0 >= 2, "ITIMER_REAL fired %d times in 200 ms", alrm_count - a0);
    CHECK(t1_count - t0 >= 4, "T1 fired %d times in 200 ms", t1_count - t0);
    /* 20 fires on a host; an emulated CPU accounts user time coarsely, so only ask for "periodic" */
    burn_cpu_ms(400);
    CHECK(vt_count - v0 >= 3, "ITIMER_VIRTUAL fired %d times in 400 ms of CPU", vt_count - v0);
    CHECK_EQ("T1 deliveries with wrong siginfo", t1_bad, 0);
    CHECK_EQ("T2 fired early", t2_count, 0);

    /* The restored timers are real kernel timers: re-arming and deleting them works. */
    struct itimerspec soon = {{0, 0}, {0, 5000000}};
    if (VSYS(timer_settime(t2, 0, &soon, NULL)) == 0) {
        tgt_sleep_ms(50);
        CHECK_EQ("T2 after re-arming to 5 ms", t2_count, 1);
    }
    CHECK(timer_delete(t3) == 0, "timer_delete(T3): %s", strerror(errno));

    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    setitimer(ITIMER_VIRTUAL, &off, NULL);
    timer_delete(t1);
    tgt_publish_result();
    tgt_idle();
}
