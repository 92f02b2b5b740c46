/*
 * In-process state the parasite reads, with the target's own account of it in CTL/ready:
 * SIGUSR1 handler (SA_SIGINFO|SA_RESTART, mask {SIGUSR2}), SIGTERM ignored, SIGHUP blocked,
 * sigaltstack on both threads, ITIMER_REAL (interval 100 s), a POSIX timer on CLOCK_MONOTONIC
 * (signal SIGUSR1, interval 50 s), thread names, parent-death signal SIGUSR2 on the worker,
 * umask 027, child subreaper, SIGUSR2 ignored. The worker thread spins a counter.
 * On CTL/verify it checks all of it is still in place and that the counter kept moving.
 */
#include "common.h"
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/time.h>

static volatile uint64_t g_counter;
static volatile pid_t g_worker_tid;
static uint8_t g_stack_main[65536], g_stack_worker[32768];

static void on_usr1(int sig, siginfo_t *si, void *uc) { (void)sig, (void)si, (void)uc; }

static void *worker(void *arg) {
    (void)arg;
    stack_t ss = {.ss_sp = g_stack_worker, .ss_size = sizeof g_stack_worker};
    if (sigaltstack(&ss, NULL)) tgt_die("worker sigaltstack");
    prctl(PR_SET_NAME, "mem-worker");
    prctl(PR_SET_PDEATHSIG, SIGUSR2);
    g_worker_tid = tgt_gettid();
    for (;;) g_counter++;
    return NULL;
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    struct sigaction sa = {.sa_sigaction = on_usr1, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    SYS(sigaction(SIGUSR1, &sa, NULL));
    SYS(signal(SIGTERM, SIG_IGN) == SIG_ERR ? -1 : 0);
    /* The worker's parent-death signal: ignored, so that the exit of the launcher (setsid -f)
     * racing with its prctl cannot kill us. */
    SYS(signal(SIGUSR2, SIG_IGN) == SIG_ERR ? -1 : 0);
    stack_t ss = {.ss_sp = g_stack_main, .ss_size = sizeof g_stack_main};
    SYS(sigaltstack(&ss, NULL));
    struct itimerval it = {.it_interval = {100, 0}, .it_value = {200, 0}};
    SYS(setitimer(ITIMER_REAL, &it, NULL));
    struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1};
    timer_t timer;
    SYS(timer_create(CLOCK_MONOTONIC, &sev, &timer));
    struct itimerspec its = {.it_interval = {50, 0}, .it_value = {60, 0}};
    SYS(timer_settime(timer, 0, &its, NULL));
    prctl(PR_SET_NAME, "mem-main");
    SYS(prctl(PR_SET_CHILD_SUBREAPER, 1));
    umask(027);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    SYS(sigprocmask(SIG_BLOCK, &block, NULL));

    pthread_t th;
    if (pthread_create(&th, NULL, worker, NULL)) tgt_die("pthread_create");
    while (!g_worker_tid) tgt_sleep_ms(1);

    char extra[1024];
    snprintf(extra, sizeof extra,
             "worker=%d\nhandler=%lx\naltstack_main=%lx\naltstack_main_size=%zu\naltstack_worker=%lx\n"
             "altstack_worker_size=%zu\ntimer=%ld\n",
             (int)g_worker_tid, (unsigned long)on_usr1, (unsigned long)g_stack_main, sizeof g_stack_main,
             (unsigned long)g_stack_worker, sizeof g_stack_worker, (long)(intptr_t)timer);
    tgt_ready(extra);
    uint64_t c0 = g_counter;
    tgt_wait_verify(NULL);

    /* The worker must still be running. On a busy machine it may not have had the CPU since
     * tgt_ready, so it gets a few seconds to move; a worker left stopped never does. */
    for (int i = 0; i < 500 && g_counter == c0; i++) tgt_sleep_ms(10);
    CHECK(g_counter > c0, "worker counter stuck at %llu", (unsigned long long)g_counter);
    struct sigaction now;
    VSYS(sigaction(SIGUSR1, NULL, &now));
    CHECK(now.sa_sigaction == on_usr1, "SIGUSR1 handler changed");
    CHECK(sigismember(&now.sa_mask, SIGUSR2) == 1, "SIGUSR1 handler mask changed");
    VSYS(sigaction(SIGTERM, NULL, &now));
    CHECK(now.sa_handler == SIG_IGN, "SIGTERM no longer ignored");
    sigset_t cur;
    VSYS(sigprocmask(SIG_BLOCK, NULL, &cur));
    CHECK(sigismember(&cur, SIGHUP) == 1 && sigismember(&cur, SIGUSR1) == 0, "signal mask changed");
    mode_t m = umask(0);
    umask(m);
    CHECK_EQ("umask", (long)m, 027L);
    VSYS(getitimer(ITIMER_REAL, &it));
    CHECK(it.it_interval.tv_sec == 100 && it.it_value.tv_sec > 0, "itimer changed");
    VSYS(timer_gettime(timer, &its));
    CHECK(its.it_interval.tv_sec == 50 && its.it_value.tv_sec > 0, "posix timer changed");
    stack_t cur_ss;
    VSYS(sigaltstack(NULL, &cur_ss));
    CHECK(cur_ss.ss_sp == g_stack_main, "sigaltstack changed");
    tgt_publish_result();
    tgt_idle();
}
