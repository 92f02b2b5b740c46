/*
 * seccomp filters that must still be in force after restore:
 *   root (3 threads): F1 "getppid fails with errno 77" installed while single-threaded, then,
 *     with two workers running, F2 "getpgrp fails with errno 78" installed with
 *     SECCOMP_FILTER_FLAG_TSYNC: every thread carries the same chain [F1, F2].
 *   child "kid" (2 threads, forked after F1 so it inherits it): its second thread adds
 *     F3 "getsid fails with errno 79" (with SECCOMP_FILTER_FLAG_LOG) on itself only, so the two
 *     threads carry different chains: [F1] and [F1, F3].
 * Verification, in every thread: the filtered syscalls fail with their errno and the others work;
 * /proc/self/task/TID/status shows Seccomp 2 and the expected Seccomp_filters count. The root
 * then installs one more filter with TSYNC, which the kernel refuses unless every thread's chain
 * is an ancestor of the caller's (what a restore without TSYNC would break).
 */
#include "common.h"
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/prctl.h>

#define E_PPID 77
#define E_PGRP 78
#define E_SID 79

/* A filter that makes syscall `nr` fail with `err` and allows everything else. */
static struct sock_filter prog_buf[3][6];
static struct sock_fprog errno_filter(int slot, int nr, int err) {
    struct sock_filter p[6] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    memcpy(prog_buf[slot], p, sizeof p);
    struct sock_fprog f = {.len = 6, .filter = prog_buf[slot]};
    return f;
}

static long install(struct sock_fprog *f, unsigned flags) {
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, f);
}

/* What one thread saw: result and errno of each probed syscall. */
struct probe {
    pid_t tid;
    long ppid_r, pgrp_r, sid_r;
    int ppid_e, pgrp_e, sid_e;
};

static void probe_now(struct probe *p) {
    p->tid = tgt_gettid();
    errno = 0;
    p->ppid_r = syscall(SYS_getppid);
    p->ppid_e = errno;
    errno = 0;
    p->pgrp_r = syscall(SYS_getpgrp);
    p->pgrp_e = errno;
    errno = 0;
    p->sid_r = syscall(SYS_getsid, 0);
    p->sid_e = errno;
}

/* Expects `r` to fail with `want` (want != 0) or to succeed. */
static void check_call(const char *who, const char *call, long r, int e, int want) {
    if (want)
        CHECK(r == -1 && e == want, "%s: %s gave %ld (errno %d), want errno %d", who, call, r, e, want);
    else
        CHECK(r >= 0, "%s: %s failed (errno %d) but no filter covers it", who, call, e);
}

static void check_probe(const char *who, const struct probe *p, int ppid_e, int pgrp_e, int sid_e,
                        int nfilters) {
    check_call(who, "getppid", p->ppid_r, p->ppid_e, ppid_e);
    check_call(who, "getpgrp", p->pgrp_r, p->pgrp_e, pgrp_e);
    check_call(who, "getsid", p->sid_r, p->sid_e, sid_e);
    char path[64], text[4096];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)p->tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof text - 1);
    if (fd >= 0) close(fd);
    if (n <= 0) {
        FAIL("%s: cannot read %s", who, path);
        return;
    }
    text[n] = 0;
    const char *m = strstr(text, "\nSeccomp:"), *c = strstr(text, "\nSeccomp_filters:");
    CHECK(m && atoi(m + 9) == 2, "%s: Seccomp mode %d, want 2", who, m ? atoi(m + 9) : -1);
    CHECK(c && atoi(c + 17) == nfilters, "%s: Seccomp_filters %d, want %d", who, c ? atoi(c + 17) : -1,
          nfilters);
}

/* Worker threads: idle until told to probe, then probe once and say so. */
struct worker {
    pthread_t th;
    atomic_int go, done;
    struct probe p;
    int install_f3;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    if (w->install_f3) {
        struct sock_fprog f3 = errno_filter(2, SYS_getsid, E_SID);
        if (install(&f3, SECCOMP_FILTER_FLAG_LOG) != 0) tgt_die("seccomp F3");
        atomic_store(&w->done, 1);
    }
    while (!atomic_load(&w->go)) tgt_sleep_ms(10);
    probe_now(&w->p);
    atomic_store(&w->done, 2);
    for (;;) tgt_sleep_ms(1000);
    return NULL;
}

static void start_worker(struct worker *w, int install_f3) {
    w->install_f3 = install_f3;
    if (pthread_create(&w->th, NULL, worker_main, w) != 0) tgt_die("pthread_create");
    if (install_f3)
        while (atomic_load(&w->done) != 1) tgt_sleep_ms(1);
}

static void wait_worker(struct worker *w, const char *who) {
    atomic_store(&w->go, 1);
    long long deadline = tgt_now_ms() + 3000;
    while (atomic_load(&w->done) != 2 && tgt_now_ms() < deadline) tgt_sleep_ms(5);
    CHECK(atomic_load(&w->done) == 2, "%s: no probe within 3 s", who);
}

static struct worker kid_worker;

static void kid_main(void) {
    tgt_role = "kid";
    start_worker(&kid_worker, 1);
    char one = 1;
    if (write(3, &one, 1) != 1) tgt_die("report up");
    close(3);
    tgt_wait_verify(NULL);
    struct probe me;
    probe_now(&me);
    wait_worker(&kid_worker, "kid.thread");
    check_probe("kid", &me, E_PPID, 0, 0, 1);
    if (atomic_load(&kid_worker.done) == 2) check_probe("kid.thread", &kid_worker.p, E_PPID, 0, E_SID, 2);
    tgt_publish_part();
    tgt_idle();
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    SYS(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
    struct sock_fprog f1 = errno_filter(0, SYS_getppid, E_PPID);
    SYS(install(&f1, 0));

    int up[2];
    SYS(pipe(up));
    pid_t kid = SYS(fork());
    if (kid == 0) {
        close(up[0]);
        if (up[1] != 3) {
            SYS(dup2(up[1], 3));
            close(up[1]);
        }
        kid_main();
    }
    close(up[1]);
    char b;
    if (read(up[0], &b, 1) != 1) tgt_die("kid did not come up");
    close(up[0]);

    static struct worker w[2];
    for (int i = 0; i < 2; i++) start_worker(&w[i], 0);
    struct sock_fprog f2 = errno_filter(1, SYS_getpgrp, E_PGRP);
    SYS(install(&f2, SECCOMP_FILTER_FLAG_TSYNC));

    char extra[64];
    snprintf(extra, sizeof extra, "kid=%d\n", (int)kid);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    struct probe me;
    probe_now(&me);
    check_probe("main", &me, E_PPID, E_PGRP, 0, 2);
    for (int i = 0; i < 2; i++) {
        char who[32];
        snprintf(who, sizeof who, "worker%d", i);
        wait_worker(&w[i], who);
        if (atomic_load(&w[i].done) == 2) check_probe(who, &w[i].p, E_PPID, E_PGRP, 0, 2);
    }
    /* TSYNC succeeds only if every thread's chain is an ancestor of ours. */
    struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog f4 = {.len = 1, .filter = &allow};
    long r = install(&f4, SECCOMP_FILTER_FLAG_TSYNC);
    CHECK(r == 0, "a new TSYNC filter after restore: %ld (errno %d)", r, errno);

    const char *roles[] = {"kid"};
    tgt_collect_parts(roles, 1, 3000);
    tgt_publish_result();
    tgt_idle();
}
