/*
 * Bench target (bench/dump.ts): a process tree of a given shape, idle once set up.
 *
 *   bench_shape CTL procs N MIB    N processes (the root and N-1 children), each with MIB MiB of
 *                                  private anonymous memory, every page written and distinct
 *   bench_shape CTL threads N      one process of N threads
 *
 * Every task ends blocked in pause() with nothing to do: the dump sees idle tasks. CTL/ready
 * (pid=ROOT) is published once every task is set up.
 */
#include "common.h"
#include <pthread.h>
#include <sys/mman.h>

static void fill(size_t mib) {
    size_t len = mib << 20;
    if (!len) return;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) tgt_die("mmap %zu MiB: %s", mib, strerror(errno));
    uint64_t salt = (uint64_t)getpid() << 32;
    for (size_t off = 0; off < len; off += 4096) {
        uint64_t v = salt | (off >> 12);
        memset(p + off, (int)(off >> 12), 4096);
        memcpy(p + off, &v, sizeof v);
    }
}

__attribute__((noreturn)) static void idle(void) {
    for (;;) pause();
}

static void *thread_main(void *arg) {
    (void)arg;
    idle();
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    if (argc < 4) tgt_die("usage: bench_shape CTL procs N MIB | threads N");
    long n = strtol(argv[3], NULL, 10);
    if (n < 1) tgt_die("N must be at least 1");
    if (!strcmp(argv[2], "threads")) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 << 10);
        for (long i = 1; i < n; i++) {
            pthread_t t;
            int e = pthread_create(&t, &attr, thread_main, NULL);
            if (e) tgt_die("pthread_create %ld: %s", i, strerror(e));
        }
    } else if (!strcmp(argv[2], "procs") && argc >= 5) {
        size_t mib = strtoul(argv[4], NULL, 10);
        int done[2];
        if (pipe2(done, O_CLOEXEC)) tgt_die("pipe: %s", strerror(errno));
        for (long i = 1; i < n; i++) {
            pid_t c = fork();
            if (c < 0) tgt_die("fork %ld: %s", i, strerror(errno));
            if (c == 0) {
                close(done[0]);
                fill(mib);
                if (write(done[1], "x", 1) != 1) _exit(1);
                close(done[1]);
                idle();
            }
        }
        close(done[1]);
        fill(mib);
        for (long got = 0; got < n - 1;) {
            char buf[256];
            ssize_t r = read(done[0], buf, sizeof buf);
            if (r <= 0) tgt_die("a child died during set-up");
            got += r;
        }
        close(done[0]);
    } else {
        tgt_die("unknown shape %s", argv[2]);
    }
    tgt_ready(NULL);
    idle();
}
