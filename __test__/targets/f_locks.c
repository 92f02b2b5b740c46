/*
 * File locks across a tree, for the --file-locks tests (__test__/file-locks.test.ts):
 * - root: flock(LOCK_SH) on CTL/a.lck through fd A, dup'd to another fd (one description, the
 *   lock shows on both fds), and inherited by the child (the same description again);
 * - root: a POSIX write lock on CTL/c.lck from byte 100 to EOF;
 * - child: a POSIX read lock on the whole of CTL/b.lck, and an OFD write lock on bytes 5..9 of
 *   CTL/d.lck through its own open.
 * - with "lease": also a read lease on CTL/e.lck (a kind tsdump refuses for now).
 * Verification (root, from forked checkers): each lock is there with its type, range and owner.
 */
#include "common.h"
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static char path_a[PATH_MAX + 16], path_b[PATH_MAX + 16], path_c[PATH_MAX + 16], path_d[PATH_MAX + 16];
static pid_t root_pid, child_pid;

static int open_ctl(const char *path, int flags) { return SYS(open(path, flags | O_CREAT, 0600)); }

/* Runs in a forked checker: appends problems to report. */
static void check_locks(char *report, size_t size) {
    size_t n = 0;
#define REPORT(...) n += (size_t)snprintf(report + n, n < size ? size - n : 0, __VA_ARGS__)
    int a = open(path_a, O_RDWR);
    if (a < 0 || flock(a, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) REPORT("a.lck: no flock; ");
    if (a >= 0 && flock(a, LOCK_SH | LOCK_NB) != 0) REPORT("a.lck: flock is not shared; ");
    int c = open(path_c, O_RDWR);
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (c < 0 || fcntl(c, F_GETLK, &q) != 0 || q.l_type != F_WRLCK || q.l_start != 100 || q.l_len != 0 ||
        q.l_pid != root_pid)
        REPORT("c.lck: type %d start %lld len %lld pid %d; ", q.l_type, (long long)q.l_start, (long long)q.l_len,
               q.l_pid);
    int b = open(path_b, O_RDWR);
    struct flock r = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (b < 0 || fcntl(b, F_GETLK, &r) != 0 || r.l_type != F_RDLCK || r.l_start != 0 || r.l_len != 0 ||
        r.l_pid != child_pid)
        REPORT("b.lck: type %d start %lld len %lld pid %d; ", r.l_type, (long long)r.l_start, (long long)r.l_len,
               r.l_pid);
    int d = open(path_d, O_RDWR);
    struct flock o = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0, .l_pid = 0};
    if (d < 0 || fcntl(d, F_OFD_GETLK, &o) != 0 || o.l_type != F_WRLCK || o.l_start != 5 || o.l_len != 5)
        REPORT("d.lck: type %d start %lld len %lld; ", o.l_type, (long long)o.l_start, (long long)o.l_len);
#undef REPORT
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    snprintf(path_a, sizeof path_a, "%s/a.lck", tgt_ctl);
    snprintf(path_b, sizeof path_b, "%s/b.lck", tgt_ctl);
    snprintf(path_c, sizeof path_c, "%s/c.lck", tgt_ctl);
    snprintf(path_d, sizeof path_d, "%s/d.lck", tgt_ctl);
    root_pid = getpid();

    int a = open_ctl(path_a, O_RDWR);
    SYS(flock(a, LOCK_SH));
    SYS(dup(a));
    if (argc > 2 && !strcmp(argv[2], "lease")) {
        char path_e[PATH_MAX + 16];
        snprintf(path_e, sizeof path_e, "%s/e.lck", tgt_ctl);
        close(open_ctl(path_e, O_RDWR));
        int e = SYS(open(path_e, O_RDONLY));
        SYS(fcntl(e, F_SETLEASE, F_RDLCK));
    }
    int c = open_ctl(path_c, O_RDWR);
    SYS(ftruncate(c, 4096));
    struct flock wl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 0};
    SYS(fcntl(c, F_SETLK, &wl));

    int ready[2];
    SYS(pipe(ready));
    child_pid = SYS(fork());
    if (child_pid == 0) {
        tgt_role = "child";
        close(ready[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int b = open_ctl(path_b, O_RDWR);
        struct flock rl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        SYS(fcntl(b, F_SETLK, &rl));
        int d = open_ctl(path_d, O_RDWR);
        SYS(ftruncate(d, 4096));
        struct flock ol = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 5, .l_pid = 0};
        SYS(fcntl(d, F_OFD_SETLK, &ol));
        SYS(write(ready[1], "k", 1));
        close(ready[1]);
        tgt_idle();
    }
    close(ready[1]);
    char k;
    if (read(ready[0], &k, 1) != 1) tgt_die("child setup");
    close(ready[0]);
    char extra[64];
    snprintf(extra, sizeof extra, "child=%d\n", (int)child_pid);
    tgt_ready(extra);

    for (;;) {
        tgt_wait_verify(NULL);
        tgt_failures[0] = 0;
        tgt_nfailures = 0;
        int p[2];
        if (VSYS(pipe(p)) == 0) {
            pid_t kid = fork();
            if (kid == 0) {
                char report[1024] = "";
                check_locks(report, sizeof report);
                if (write(p[1], report, strlen(report) + 1) < 0) _exit(2);
                _exit(0);
            }
            close(p[1]);
            char report[1024] = {0};
            ssize_t r = read(p[0], report, sizeof report - 1);
            close(p[0]);
            waitpid(kid, NULL, 0);
            CHECK(r > 0 && report[0] == 0, "%s", r > 0 ? report : "checker said nothing");
        }
        tgt_publish_result();
        while (tgt_ctl_exists("verify")) tgt_sleep_ms(5);
    }
}
