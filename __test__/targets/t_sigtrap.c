/*
 * A SIGTRAP handler (SA_SIGINFO|SA_RESTART, sa_mask {SIGUSR1}), as debuggers' inferiors, JITs and
 * sanitizers install one. The dumper itself traps the task with int3/brk while it inspects it,
 * so SIGTRAP is the disposition most at risk of being read or restored wrongly.
 * Verification: the disposition reads back exactly as set (handler address, flags, mask), and a
 * raised SIGTRAP (and a breakpoint instruction) runs the handler with the siginfo it should have.
 * With the argument "pending", SIGTRAP is also blocked with one raised and pending at the dump
 * (which the dumper must refuse, its own trap would consume it); verification checks it is
 * still pending and runs the handler once unblocked.
 */
#include "common.h"

static volatile int trap_count, trap_code, trap_mask_ok;

static void on_trap(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    trap_mask_ok = sigismember(&cur, SIGUSR1) == 1 && sigismember(&cur, SIGTRAP) == 1;
    trap_code = si->si_code;
    trap_count++;
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR1);
    SYS(sigaction(SIGTRAP, &sa, NULL));
    /* It works before the dump. */
    raise(SIGTRAP);
    if (trap_count != 1) tgt_die("SIGTRAP handler did not run before the dump");
    trap_count = 0;
    int pending = argc > 2 && strcmp(argv[2], "pending") == 0;
    if (pending) {
        sigset_t trap;
        sigemptyset(&trap);
        sigaddset(&trap, SIGTRAP);
        SYS(sigprocmask(SIG_BLOCK, &trap, NULL));
        raise(SIGTRAP);
    }
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    struct sigaction now;
    VSYS(sigaction(SIGTRAP, NULL, &now));
    CHECK((void *)now.sa_sigaction == (void *)on_trap, "SIGTRAP handler %p, want %p", (void *)now.sa_sigaction,
          (void *)on_trap);
    CHECK_EQ("SIGTRAP flags & (SA_SIGINFO|SA_RESTART)", now.sa_flags & (SA_SIGINFO | SA_RESTART),
             SA_SIGINFO | SA_RESTART);
    CHECK(sigismember(&now.sa_mask, SIGUSR1) == 1, "SIGTRAP sa_mask lost SIGUSR1");
    if (pending) {
        sigset_t set, trap;
        VSYS(sigpending(&set));
        CHECK(sigismember(&set, SIGTRAP) == 1, "the blocked SIGTRAP is no longer pending");
        sigemptyset(&trap);
        sigaddset(&trap, SIGTRAP);
        VSYS(sigprocmask(SIG_UNBLOCK, &trap, NULL));
        CHECK_EQ("SIGTRAP handler runs for the pending SIGTRAP", trap_count, 1);
        trap_count = 0;
    }
    if ((void *)now.sa_sigaction == (void *)on_trap) {
        raise(SIGTRAP);
        CHECK_EQ("SIGTRAP handler runs after raise()", trap_count, 1);
        CHECK_EQ("raise() si_code", trap_code, SI_TKILL);
        CHECK(trap_mask_ok, "sa_mask not applied while the handler ran");
#if defined(__x86_64__)
        __asm__ volatile("int3");
        CHECK_EQ("SIGTRAP handler runs after int3", trap_count, 2);
#elif defined(__aarch64__)
        /* brk does not advance the pc: the handler would rerun it forever; raise() suffices. */
#endif
    }
    tgt_publish_result();
    tgt_idle();
}
