/*
 * Per-task attributes kept in the task core rather than in memory or files:
 *   rlimits: NOFILE lowered to 256/1024, CORE 0/0, STACK soft 4 MiB, MSGQUEUE 4096/8192
 *   nice 7 under SCHED_BATCH; comm "tsd-attrs!" (PR_SET_NAME); child subreaper on;
 *   no_new_privs set
 * Verification: getrlimit/getpriority/sched_getscheduler/prctl give the same values, /proc/self/comm
 * shows the name, and the NOFILE limit is enforced (opening fd 256 fails with EMFILE).
 */
#include "common.h"
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>

struct lim { int res; const char *name; rlim_t cur, max; };
static struct lim lims[] = {
    {RLIMIT_NOFILE, "NOFILE", 256, 1024},
    {RLIMIT_CORE, "CORE", 0, 0},
    {RLIMIT_STACK, "STACK", 4 << 20, 0 /* keep */},
    {RLIMIT_MSGQUEUE, "MSGQUEUE", 4096, 8192},
};
#define NLIMS (int)(sizeof lims / sizeof lims[0])

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    for (int i = 0; i < NLIMS; i++) {
        struct rlimit r;
        SYS(getrlimit(lims[i].res, &r));
        if (lims[i].max == 0 && lims[i].res == RLIMIT_STACK) lims[i].max = r.rlim_max;
        r.rlim_cur = lims[i].cur;
        r.rlim_max = lims[i].max;
        SYS(setrlimit(lims[i].res, &r));
    }
    struct sched_param sp = {0};
    SYS(sched_setscheduler(0, SCHED_BATCH, &sp));
    SYS(setpriority(PRIO_PROCESS, 0, 7));
    SYS(prctl(PR_SET_NAME, "tsd-attrs!"));
    SYS(prctl(PR_SET_CHILD_SUBREAPER, 1));
    SYS(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));

    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    for (int i = 0; i < NLIMS; i++) {
        struct rlimit r;
        if (VSYS(getrlimit(lims[i].res, &r)) != 0) continue;
        if (r.rlim_cur != lims[i].cur || r.rlim_max != lims[i].max)
            FAIL("RLIMIT_%s %llu/%llu, want %llu/%llu", lims[i].name, (unsigned long long)r.rlim_cur,
                 (unsigned long long)r.rlim_max, (unsigned long long)lims[i].cur,
                 (unsigned long long)lims[i].max);
    }
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, 0);
    CHECK(errno == 0 && nice_now == 7, "nice %d, want 7", nice_now);
    CHECK_EQ("scheduling policy (SCHED_BATCH=3)", sched_getscheduler(0), SCHED_BATCH);
    char name[32] = {0};
    prctl(PR_GET_NAME, name);
    CHECK(!strcmp(name, "tsd-attrs!"), "PR_GET_NAME '%s'", name);
    FILE *f = fopen("/proc/self/comm", "r");
    char comm[32] = {0};
    if (f) {
        if (!fgets(comm, sizeof comm, f)) comm[0] = 0;
        fclose(f);
    }
    CHECK(!strcmp(comm, "tsd-attrs!\n"), "/proc/self/comm '%s'", comm);
    int sub = -1;
    prctl(PR_GET_CHILD_SUBREAPER, &sub);
    CHECK_EQ("child subreaper", sub, 1);
    CHECK_EQ("no_new_privs", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), 1);
    int fd = fcntl(0, F_DUPFD, 256);
    CHECK(fd < 0 && errno == EINVAL, "fd 256 allowed under RLIMIT_NOFILE 256 (got %d, %s)", fd, strerror(errno));
    if (fd >= 0) close(fd);
    tgt_publish_result();
    tgt_idle();
}
