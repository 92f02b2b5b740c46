/*
 * Threads with thread-local state. Forty workers each own __thread values (a word and a patterned
 * buffer), a pthread_key value, a thread name, a per-thread signal mask and a counter they keep
 * incrementing; one more thread sleeps in pthread_cond_wait (a futex) until verification wakes
 * it. Forty, so that a dump visits and hands over the threads in several batches (tsdump's
 * collect.rs THREAD_BATCH is 16): a thread given another's state comes back with a wrong name,
 * mask or TLS. Verification: same TIDs, TLS at the same addresses with the same contents, names
 * and masks kept, every counter advancing after restore, the futex waiter wakes, exactly
 * WORKERS + 2 tasks.
 */
#include "common.h"
#include <dirent.h>
#include <pthread.h>
#include <sys/prctl.h>

#define WORKERS 40
/* distinct real-time signals for the masks (SIGRTMIN + 3 .. + 26, within SIGRTMAX) */
#define MASK_SIGNALS 24

static __thread uint64_t tls_word;
static __thread uint8_t tls_buf[512];
static pthread_key_t key;

struct worker {
    pthread_t th;
    int idx;
    pid_t tid;
    uint64_t *tls_addr;
    volatile uint64_t counter;
    volatile int started;
    volatile int checked; /* 1 once the worker ran its own checks after verify */
    char err[256];
};

static struct worker workers[WORKERS];
static volatile int g_verify;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static volatile int g_wake, g_waiter_started, g_waiter_woke;
static pid_t g_waiter_tid;

static int worker_signal(int idx) { return SIGRTMIN + 3 + idx % MASK_SIGNALS; }

/* Worker 1's name has what /proc/PID/status escapes (a backslash, a newline) and spaces at both
 * ends, which a dump must carry exactly. */
static void worker_name(int idx, char *out, size_t size) {
    if (idx == 1) snprintf(out, size, " tsd\\w\n1 ");
    else snprintf(out, size, "tsd-worker-%d", idx);
}

static void worker_check(struct worker *w) {
    char name[32], want[32];
    int n = 0;
    worker_name(w->idx, want, sizeof want);
    prctl(PR_GET_NAME, name);
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    if (tgt_gettid() != w->tid)
        n += snprintf(w->err + n, sizeof w->err - n, "tid %d != %d ", tgt_gettid(), w->tid);
    if (&tls_word != w->tls_addr) n += snprintf(w->err + n, sizeof w->err - n, "TLS moved ");
    if (tls_word != 0xabc0000ULL + (uint64_t)w->idx)
        n += snprintf(w->err + n, sizeof w->err - n, "tls_word=%llx ", (unsigned long long)tls_word);
    if (tgt_check_fill(tls_buf, sizeof tls_buf, 10 + (uint32_t)w->idx) >= 0)
        n += snprintf(w->err + n, sizeof w->err - n, "tls_buf differs ");
    if (pthread_getspecific(key) != (void *)w)
        n += snprintf(w->err + n, sizeof w->err - n, "pthread key value lost ");
    if (strcmp(name, want) != 0)
        n += snprintf(w->err + n, sizeof w->err - n, "name '%s' ", name);
    for (int i = 0; i < MASK_SIGNALS; i++) {
        int blocked = sigismember(&cur, worker_signal(i)) == 1;
        if (blocked != (worker_signal(i) == worker_signal(w->idx)))
            n += snprintf(w->err + n, sizeof w->err - n, "mask bit %d=%d ", worker_signal(i), blocked);
    }
    (void)n;
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    char name[32];
    worker_name(w->idx, name, sizeof name);
    prctl(PR_SET_NAME, name);
    w->tid = tgt_gettid();
    tls_word = 0xabc0000ULL + (uint64_t)w->idx;
    tgt_fill(tls_buf, sizeof tls_buf, 10 + (uint32_t)w->idx);
    w->tls_addr = &tls_word;
    pthread_setspecific(key, w);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, worker_signal(w->idx));
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    w->started = 1;
    for (;;) {
        if (tls_word != 0xabc0000ULL + (uint64_t)w->idx) {
            snprintf(w->err, sizeof w->err, "tls_word changed while running");
            w->checked = 1;
        }
        w->counter++;
        if (g_verify && !w->checked) {
            worker_check(w);
            w->checked = 1;
        }
        tgt_sleep_ms(2);
    }
    return NULL;
}

static void *waiter_main(void *arg) {
    (void)arg;
    prctl(PR_SET_NAME, "tsd-waiter");
    g_waiter_tid = tgt_gettid();
    pthread_mutex_lock(&mu);
    g_waiter_started = 1;
    while (!g_wake) pthread_cond_wait(&cond, &mu);
    g_waiter_woke = 1;
    pthread_mutex_unlock(&mu);
    for (;;) tgt_sleep_ms(1000);
    return NULL;
}


int main(int argc, char **argv) {
    tgt_init(argc, argv);
    if (pthread_key_create(&key, NULL) != 0) tgt_die("pthread_key_create");
    for (int i = 0; i < WORKERS; i++) {
        workers[i].idx = i;
        if (pthread_create(&workers[i].th, NULL, worker_main, &workers[i]) != 0)
            tgt_die("pthread_create");
    }
    pthread_t waiter;
    if (pthread_create(&waiter, NULL, waiter_main, NULL) != 0) tgt_die("pthread_create");
    for (int i = 0; i < WORKERS; i++)
        while (!workers[i].started) tgt_sleep_ms(1);
    while (!g_waiter_started) tgt_sleep_ms(1);
    tgt_sleep_ms(20); /* let the waiter enter the futex wait */
    pid_t main_tid = tgt_gettid();
    char extra[2048];
    int n = 0;
    for (int i = 0; i < WORKERS; i++) n += snprintf(extra + n, sizeof extra - n, "tid%d=%d\n", i, workers[i].tid);
    snprintf(extra + n, sizeof extra - n, "waiter=%d\n", g_waiter_tid);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    CHECK_EQ("main tid", tgt_gettid(), main_tid);
    uint64_t before[WORKERS];
    for (int i = 0; i < WORKERS; i++) before[i] = workers[i].counter;
    g_verify = 1;
    long long deadline = tgt_now_ms() + 2000;
    for (int i = 0; i < WORKERS; i++)
        while (!workers[i].checked && tgt_now_ms() < deadline) tgt_sleep_ms(1);
    tgt_sleep_ms(30);
    for (int i = 0; i < WORKERS; i++) {
        CHECK(workers[i].checked, "worker %d never ran its checks (stuck?)", i);
        CHECK(workers[i].err[0] == 0, "worker %d: %s", i, workers[i].err);
        CHECK(workers[i].counter > before[i] + 2, "worker %d counter stalled: %llu -> %llu", i,
              (unsigned long long)before[i], (unsigned long long)workers[i].counter);
    }
    CHECK(!g_waiter_woke, "futex waiter woke before being signalled");
    pthread_mutex_lock(&mu);
    g_wake = 1;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&mu);
    deadline = tgt_now_ms() + 1000;
    while (!g_waiter_woke && tgt_now_ms() < deadline) tgt_sleep_ms(1);
    CHECK(g_waiter_woke, "futex waiter did not wake after pthread_cond_signal");

    /* Exactly our tasks: none lost, none added by the restore. */
    int ntasks = 0;
    DIR *d = opendir("/proc/self/task");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') ntasks++;
        closedir(d);
    }
    CHECK_EQ("tasks in /proc/self/task", ntasks, WORKERS + 2);
    char path[64], comm[64];
    for (int i = 0; i < WORKERS; i++) {
        snprintf(path, sizeof path, "/proc/self/task/%d/comm", workers[i].tid);
        FILE *f = fopen(path, "r");
        if (!f) {
            FAIL("no task %d for worker %d", workers[i].tid, i);
            continue;
        }
        /* the file is the name and a newline (the name may hold a newline itself) */
        size_t got = fread(comm, 1, sizeof comm - 1, f);
        fclose(f);
        comm[got] = 0;
        char want[32];
        worker_name(i, want, sizeof want);
        strcat(want, "\n");
        CHECK(strcmp(comm, want) == 0, "task %d comm '%s' want '%s'", workers[i].tid, comm, want);
    }
    tgt_publish_result();
    tgt_idle();
}
