/*
 * A thread in seccomp strict mode (SECCOMP_MODE_STRICT: only read, write, _exit and sigreturn),
 * beside a main thread that runs the protocol. The strict thread echoes every byte it reads from
 * one pipe, plus one, into another; at dump time it is blocked in read().
 * Verification: /proc/self/task/TID/status of the worker shows Seccomp 1 (the main thread 0), and
 * a byte sent through the pipes comes back incremented (the worker lives and still serves).
 */
#include "common.h"
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>

static int to_worker[2], from_worker[2];
static volatile pid_t worker_tid;

static void *strict_main(void *arg) {
    (void)arg;
    worker_tid = tgt_gettid();
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0) tgt_die("PR_SET_SECCOMP strict");
    /* From here on only read/write/_exit/sigreturn: anything else kills the process. */
    for (;;) {
        unsigned char b;
        if (read(to_worker[0], &b, 1) != 1) syscall(SYS_exit, 1);
        b++;
        if (write(from_worker[1], &b, 1) != 1) syscall(SYS_exit, 1);
    }
    return NULL;
}

static int seccomp_of(pid_t tid) {
    char path[64], text[4096];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof text - 1);
    if (fd >= 0) close(fd);
    if (n <= 0) return -1;
    text[n] = 0;
    const char *m = strstr(text, "\nSeccomp:");
    return m ? atoi(m + 9) : -1;
}

/* Sends `b` to the worker and returns its reply, or -1 after 3 s. */
static int echo(unsigned char b) {
    if (write(to_worker[1], &b, 1) != 1) return -1;
    struct pollfd p = {.fd = from_worker[0], .events = POLLIN};
    if (poll(&p, 1, 3000) != 1) return -1;
    unsigned char r;
    return read(from_worker[0], &r, 1) == 1 ? r : -1;
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    SYS(pipe(to_worker));
    SYS(pipe(from_worker));
    pthread_t th;
    if (pthread_create(&th, NULL, strict_main, NULL) != 0) tgt_die("pthread_create");
    while (!worker_tid || seccomp_of(worker_tid) != 1) tgt_sleep_ms(1);
    if (echo(41) != 42) tgt_die("strict worker does not echo");

    char extra[64];
    snprintf(extra, sizeof extra, "strict_tid=%d\n", (int)worker_tid);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    CHECK_EQ("worker Seccomp mode", seccomp_of(worker_tid), 1);
    CHECK_EQ("main Seccomp mode", seccomp_of(tgt_gettid()), 0);
    CHECK_EQ("echo 7", echo(7), 8);
    CHECK_EQ("echo 200", echo(200), 201);
    tgt_publish_result();
    tgt_idle();
}
