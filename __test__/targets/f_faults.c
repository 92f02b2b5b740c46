/*
 * The subject of the fault tests (__test__/dump-faults.test.ts): a process whose state shows
 * whether a failed, cancelled or killed dump left it as it was.
 *
 *   f_faults CTL MEM_MIB [lock] [child]
 *
 * - MEM_MIB MiB of anonymous memory, every 8-byte word patterned from its offset, so the page
 *   drain takes a while (the window the fault tests aim at) and any lost or garbled page shows.
 * - SIGUSR1, SIGUSR2 and SIGRTMIN+2 blocked in the main thread (a parasite that forgets to put
 *   the mask back is caught by the test through SigBlk and by the target itself).
 * - a worker thread counting milliseconds: it must keep advancing after any dump attempt.
 * - "lock": flock(LOCK_EX) on CTL/f.lck (a resource tsdump refuses without --file-locks).
 * - "child": a child process that idles (its pid is published as child=PID).
 *
 * Verification can be asked for repeatedly (live after a failed dump, again after a restore):
 * each CTL/verify gets one CTL/result, then the target waits for the next request.
 */
#include "common.h"
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static volatile uint64_t g_ticks;
static uint64_t *g_mem;
static size_t g_words;
static sigset_t g_blocked;
static char g_lock_path[PATH_MAX + 32];
static int g_lock_fd = -1;

static inline uint64_t word_at(size_t i) { return (uint64_t)i * 0x9E3779B97F4A7C15ull ^ 0x5a5aa5a5f00dull; }

static void *ticker(void *arg) {
    (void)arg;
    for (;;) {
        tgt_sleep_ms(1);
        g_ticks++;
    }
    return NULL;
}

static void verify(uint64_t ticks_at_ready) {
    for (size_t i = 0; i < g_words; i++) {
        if (g_mem[i] != word_at(i)) {
            FAIL("memory word %zu (offset %zu): got 0x%llx", i, i * 8, (unsigned long long)g_mem[i]);
            break;
        }
    }
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    for (int s = 1; s < NSIG; s++) {
        if (sigismember(&now, s) != sigismember(&g_blocked, s))
            FAIL("signal %d is %s, expected %s", s, sigismember(&now, s) ? "blocked" : "unblocked",
                 sigismember(&g_blocked, s) ? "blocked" : "unblocked");
    }
    uint64_t t0 = g_ticks;
    CHECK(t0 > ticks_at_ready, "ticker did not advance since ready (%llu)", (unsigned long long)t0);
    tgt_sleep_ms(100);
    CHECK(g_ticks > t0 + 10, "ticker stalled: %llu -> %llu in 100 ms", (unsigned long long)t0,
          (unsigned long long)g_ticks);
    if (g_lock_fd >= 0) {
        pid_t kid = fork();
        if (kid == 0) {
            int f = open(g_lock_path, O_RDWR);
            _exit(f >= 0 && flock(f, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK ? 0 : 1);
        }
        int st = 0;
        if (kid < 0 || waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            FAIL("flock on f.lck is not held any more");
    }
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    if (argc < 3) tgt_die("usage: f_faults CTL MEM_MIB [lock] [child]");
    size_t mib = (size_t)strtoul(argv[2], NULL, 10);
    int want_lock = 0, want_child = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "lock")) want_lock = 1;
        else if (!strcmp(argv[i], "child")) want_child = 1;
        else tgt_die("unknown option %s", argv[i]);
    }

    char extra[256] = "";
    if (want_child) {
        pid_t kid = SYS(fork());
        if (kid == 0) {
            tgt_role = "child";
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            tgt_idle();
        }
        snprintf(extra, sizeof extra, "child=%d\n", (int)kid);
    }

    if (mib > 0) {
        size_t len = mib << 20;
        g_mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (g_mem == MAP_FAILED) tgt_die("mmap %zu MiB", mib);
        g_words = len / 8;
        for (size_t i = 0; i < g_words; i++) g_mem[i] = word_at(i);
    }
    if (want_lock) {
        snprintf(g_lock_path, sizeof g_lock_path, "%s/f.lck", tgt_ctl);
        g_lock_fd = SYS(open(g_lock_path, O_RDWR | O_CREAT, 0600));
        SYS(flock(g_lock_fd, LOCK_EX));
    }
    sigemptyset(&g_blocked);
    sigaddset(&g_blocked, SIGUSR1);
    sigaddset(&g_blocked, SIGUSR2);
    sigaddset(&g_blocked, SIGRTMIN + 2);
    /* The ticker starts with the mask set, so both threads carry it. */
    SYS(sigprocmask(SIG_SETMASK, &g_blocked, NULL));
    pthread_t th;
    if (pthread_create(&th, NULL, ticker, NULL) != 0) tgt_die("pthread_create");

    while (g_ticks < 5) tgt_sleep_ms(1);
    uint64_t at_ready = g_ticks;
    tgt_ready(extra);
    for (;;) {
        tgt_wait_verify(NULL);
        tgt_failures[0] = 0;
        tgt_nfailures = 0;
        verify(at_ready);
        tgt_publish_result();
        while (tgt_ctl_exists("verify")) tgt_sleep_ms(5);
    }
}
