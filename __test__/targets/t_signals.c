/*
 * Signal dispositions, masks, pending signals and the alternate stack:
 *   SIGUSR1  SA_SIGINFO|SA_RESTART, sa_mask {SIGUSR2, SIGWINCH}
 *   SIGUSR2  SA_ONSTACK, on a 64 KiB sigaltstack
 *   SIGHUP   SA_RESETHAND|SA_NODEFER (flags checked, never raised)
 *   SIGTERM  ignored; SIGQUIT default
 *   blocked: SIGINT, SIGPIPE, SIGRTMIN+1
 *   pending: SIGINT (thread-private), SIGRTMIN+1 x3: one thread-private (value 333) and two
 *            process-wide (values 111, 222), all queued with SI_QUEUE
 * Verification: dispositions/flags/masks as set, alt stack as set, exactly those signals pending;
 * unblocking delivers SIGINT once and the real-time values in kernel order (private queue first:
 * 333, 111, 222); SIGUSR1 still runs with its sa_mask applied and siginfo; SIGUSR2 runs on the
 * alt stack; a read() interrupted by SIGUSR1 restarts (SA_RESTART); SIGTERM is still ignored.
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define ALT_SIZE (64 * 1024)

static void *g_alt;
static volatile int usr1_count, usr1_code, usr1_value, usr1_pid, usr1_mask_ok;
static volatile int usr2_count, usr2_on_alt;
static volatile int int_count;
static volatile int rt_count, rt_values[8], rt_codes[8];
static int sig_rt;

static void on_usr1(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    usr1_mask_ok = sigismember(&cur, SIGUSR2) == 1 && sigismember(&cur, SIGWINCH) == 1 &&
                   sigismember(&cur, SIGUSR1) == 1 && sigismember(&cur, SIGCHLD) == 0;
    usr1_code = si->si_code;
    usr1_value = si->si_value.sival_int;
    usr1_pid = si->si_pid;
    usr1_count++;
}

static void on_usr2(int sig) {
    (void)sig;
    char here;
    uintptr_t a = (uintptr_t)&here, lo = (uintptr_t)g_alt;
    stack_t ss;
    sigaltstack(NULL, &ss);
    usr2_on_alt = a >= lo && a < lo + ALT_SIZE && (ss.ss_flags & SS_ONSTACK);
    usr2_count++;
}

static void on_int(int sig) {
    (void)sig;
    int_count++;
}

static void on_rt(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    if (rt_count < 8) {
        rt_values[rt_count] = si->si_value.sival_int;
        rt_codes[rt_count] = si->si_code;
    }
    rt_count++;
}

static void on_hup(int sig) { (void)sig; }

static void install(int sig, void *handler, int flags, const int *mask_sigs) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (flags & SA_SIGINFO)
        sa.sa_sigaction = handler;
    else
        sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    for (; mask_sigs && *mask_sigs; mask_sigs++) sigaddset(&sa.sa_mask, *mask_sigs);
    SYS(sigaction(sig, &sa, NULL));
}

static void expect_action(int sig, void *handler, int flags, const int *mask_sigs) {
    struct sigaction sa;
    if (sigaction(sig, NULL, &sa) != 0) {
        FAIL("sigaction(%d) query: %s", sig, strerror(errno));
        return;
    }
    void *got = (sa.sa_flags & SA_SIGINFO) ? (void *)sa.sa_sigaction : (void *)sa.sa_handler;
    CHECK(got == handler, "signal %d handler %p, want %p", sig, got, handler);
    const int relevant = SA_SIGINFO | SA_RESTART | SA_ONSTACK | SA_RESETHAND | SA_NODEFER;
    CHECK((sa.sa_flags & relevant) == flags, "signal %d flags 0x%x, want 0x%x", sig,
          sa.sa_flags & relevant, flags);
    for (int s = 1; s < 65; s++) {
        if (s == 32 || s == 33) continue; /* glibc-internal */
        int want = 0;
        for (const int *m = mask_sigs; m && *m; m++) want |= *m == s;
        if (sigismember(&sa.sa_mask, s) != want)
            FAIL("signal %d sa_mask bit %d is %d, want %d", sig, s, sigismember(&sa.sa_mask, s), want);
    }
}

static int queue_private(int sig, int value) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = sig;
    si.si_code = SI_QUEUE;
    si.si_pid = getpid();
    si.si_uid = getuid();
    si.si_value.sival_int = value;
    return (int)syscall(SYS_rt_tgsigqueueinfo, getpid(), tgt_gettid(), sig, &si);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    sig_rt = SIGRTMIN + 1;
    g_alt = SYS(mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    stack_t ss = {.ss_sp = g_alt, .ss_size = ALT_SIZE, .ss_flags = 0};
    SYS(sigaltstack(&ss, NULL));

    static const int usr1_mask[] = {SIGUSR2, SIGWINCH, 0};
    install(SIGUSR1, (void *)on_usr1, SA_SIGINFO | SA_RESTART, usr1_mask);
    install(SIGUSR2, (void *)on_usr2, SA_ONSTACK, NULL);
    install(SIGHUP, (void *)on_hup, SA_RESETHAND | SA_NODEFER, NULL);
    install(SIGINT, (void *)on_int, 0, NULL);
    install(sig_rt, (void *)on_rt, SA_SIGINFO, NULL);
    install(SIGTERM, (void *)SIG_IGN, 0, NULL);
    install(SIGQUIT, (void *)SIG_DFL, 0, NULL); /* whatever the launcher left, make it default */

    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGPIPE);
    sigaddset(&block, sig_rt);
    SYS(sigprocmask(SIG_BLOCK, &block, NULL));
    SYS(queue_private(sig_rt, 333));
    SYS(sigqueue(getpid(), sig_rt, (union sigval){.sival_int = 111}));
    SYS(sigqueue(getpid(), sig_rt, (union sigval){.sival_int = 222}));
    SYS(queue_private(SIGINT, 5));

    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    expect_action(SIGUSR1, (void *)on_usr1, SA_SIGINFO | SA_RESTART, usr1_mask);
    expect_action(SIGUSR2, (void *)on_usr2, SA_ONSTACK, NULL);
    expect_action(SIGHUP, (void *)on_hup, SA_RESETHAND | SA_NODEFER, NULL);
    expect_action(SIGINT, (void *)on_int, 0, NULL);
    expect_action(sig_rt, (void *)on_rt, SA_SIGINFO, NULL);
    expect_action(SIGTERM, (void *)SIG_IGN, 0, NULL);
    expect_action(SIGQUIT, (void *)SIG_DFL, 0, NULL);

    stack_t now;
    if (VSYS(sigaltstack(NULL, &now)) == 0)
        CHECK(now.ss_sp == g_alt && now.ss_size == ALT_SIZE && now.ss_flags == 0,
              "sigaltstack %p/%zu/%d, want %p/%d/0", now.ss_sp, now.ss_size, now.ss_flags, g_alt,
              ALT_SIZE);

    sigset_t cur, pend;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    sigpending(&pend);
    for (int s = 1; s < 65; s++) {
        if (s == 32 || s == 33) continue;
        int want_blocked = s == SIGINT || s == SIGPIPE || s == sig_rt;
        int want_pending = s == SIGINT || s == sig_rt;
        if (sigismember(&cur, s) != want_blocked) FAIL("signal %d blocked=%d", s, sigismember(&cur, s));
        if (sigismember(&pend, s) != want_pending) FAIL("signal %d pending=%d", s, sigismember(&pend, s));
    }
    CHECK_EQ("handlers run before unblocking", int_count + rt_count + usr1_count + usr2_count, 0);

    /* Unblocking delivers the queued signals before sigprocmask returns. */
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGINT);
    sigaddset(&unblock, sig_rt);
    sigprocmask(SIG_UNBLOCK, &unblock, NULL);
    CHECK_EQ("SIGINT deliveries", int_count, 1);
    CHECK_EQ("SIGRTMIN+1 deliveries", rt_count, 3);
    static const int want_rt[] = {333, 111, 222};
    for (int i = 0; i < 3 && i < rt_count; i++) {
        if (rt_values[i] != want_rt[i]) FAIL("rt signal %d value %d, want %d", i, rt_values[i], want_rt[i]);
        if (rt_codes[i] != SI_QUEUE) FAIL("rt signal %d si_code %d, want SI_QUEUE", i, rt_codes[i]);
    }

    sigqueue(getpid(), SIGUSR1, (union sigval){.sival_int = 7});
    CHECK_EQ("SIGUSR1 deliveries", usr1_count, 1);
    CHECK(usr1_mask_ok, "SIGUSR1 handler ran without its sa_mask (SIGUSR2/SIGWINCH/SIGUSR1 blocked)");
    CHECK(usr1_code == SI_QUEUE && usr1_value == 7 && usr1_pid == getpid(),
          "SIGUSR1 siginfo code %d value %d pid %d", usr1_code, usr1_value, usr1_pid);

    raise(SIGUSR2);
    CHECK_EQ("SIGUSR2 deliveries", usr2_count, 1);
    CHECK(usr2_on_alt, "SIGUSR2 handler did not run on the alternate stack");

    /* SA_RESTART: a blocking read interrupted by SIGUSR1 must resume, not fail with EINTR. */
    int p[2];
    if (VSYS(pipe(p)) == 0) {
        pid_t parent = getpid(), kid = fork();
        if (kid == 0) {
            tgt_sleep_ms(30);
            kill(parent, SIGUSR1);
            tgt_sleep_ms(30);
            if (write(p[1], "r", 1) != 1) _exit(1);
            _exit(0);
        }
        close(p[1]);
        char c;
        ssize_t r = read(p[0], &c, 1);
        CHECK(r == 1, "read interrupted by SIGUSR1 returned %zd (%s): SA_RESTART lost", r,
              r < 0 ? strerror(errno) : "");
        CHECK_EQ("SIGUSR1 deliveries after restart test", usr1_count, 2);
        close(p[0]);
        waitpid(kid, NULL, 0);
    }

    kill(getpid(), SIGTERM); /* ignored: we carry on */
    tgt_publish_result();
    tgt_idle();
}
