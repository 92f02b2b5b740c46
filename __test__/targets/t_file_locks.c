/*
 * File locks (dumped only with --file-locks): a whole-file flock(LOCK_EX) on CTL/flock.lck, a POSIX
 * write lock on bytes 10..19 of CTL/posix.lck and an OFD read lock on bytes 100..199 of the same
 * file. Verification from a forked checker: the flock is held (LOCK_NB fails), F_GETLK reports our
 * POSIX lock with our pid, F_OFD_GETLK reports the OFD lock; outside the ranges is free.
 */
#include "common.h"
#include <sys/file.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char fpath[PATH_MAX + 32], ppath[PATH_MAX + 32];
    snprintf(fpath, sizeof fpath, "%s/flock.lck", tgt_ctl);
    snprintf(ppath, sizeof ppath, "%s/posix.lck", tgt_ctl);
    int ff = SYS(open(fpath, O_RDWR | O_CREAT, 0600));
    SYS(flock(ff, LOCK_EX));
    int pf = SYS(open(ppath, O_RDWR | O_CREAT, 0600));
    SYS(ftruncate(pf, 4096));
    struct flock wl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 10};
    SYS(fcntl(pf, F_SETLK, &wl));
    int of = SYS(open(ppath, O_RDONLY));
    struct flock rl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 100, .l_pid = 0};
    SYS(fcntl(of, F_OFD_SETLK, &rl));
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    pid_t me = getpid();
    int p[2];
    if (VSYS(pipe(p)) == 0) {
        pid_t kid = fork();
        if (kid == 0) {
            char report[512] = "";
            size_t n = 0;
            int f = open(fpath, O_RDWR);
            if (f < 0 || flock(f, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
                n += (size_t)snprintf(report + n, sizeof report - n, "flock not held; ");
            int g = open(ppath, O_RDWR);
            struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 50};
            if (g < 0 || fcntl(g, F_GETLK, &q) != 0 || q.l_type != F_WRLCK || q.l_start != 10 || q.l_len != 10 || q.l_pid != me)
                n += (size_t)snprintf(report + n, sizeof report - n, "POSIX lock: type %d start %lld len %lld pid %d; ",
                                      q.l_type, (long long)q.l_start, (long long)q.l_len, q.l_pid);
            struct flock o = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 150, .l_len = 1, .l_pid = 0};
            if (g < 0 || fcntl(g, F_OFD_GETLK, &o) != 0 || o.l_type != F_RDLCK || o.l_start != 100 || o.l_len != 100)
                n += (size_t)snprintf(report + n, sizeof report - n, "OFD lock: type %d start %lld len %lld; ",
                                      o.l_type, (long long)o.l_start, (long long)o.l_len);
            struct flock free_range = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 300, .l_len = 10};
            if (g < 0 || fcntl(g, F_GETLK, &free_range) != 0 || free_range.l_type != F_UNLCK)
                n += (size_t)snprintf(report + n, sizeof report - n, "bytes 300..309 locked; ");
            if (write(p[1], report, strlen(report) + 1) < 0) _exit(2);
            _exit(0);
        }
        close(p[1]);
        char report[512] = {0};
        ssize_t r = read(p[0], report, sizeof report - 1);
        close(p[0]);
        waitpid(kid, NULL, 0);
        CHECK(r > 0 && report[0] == 0, "%s", r > 0 ? report : "checker said nothing");
    }
    tgt_publish_result();
    tgt_idle();
}
