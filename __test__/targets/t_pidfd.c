/*
 * Process file descriptors (pidfd_open; what Go's os/exec, systemd and modern supervisors hold
 * for their children): fd 10 on a live child, fd 11 on the same child with PIDFD_NONBLOCK, and
 * fd 12 on a child that exited and was reaped (its pidfd refers to no process any more).
 * Verification: fds 10/11 still refer to the child (fdinfo Pid, not ready while it lives,
 * flags), pidfd_send_signal through fd 10 kills it and waitid(P_PIDFD) reaps it with that
 * status; fd 12 is readable at once and names no process (Pid -1).
 * With the argument "outside", fd 13 is also a pidfd on the target's parent (outside the tree,
 * which a dumper must refuse); verification checks it still names that parent.
 */
#include "common.h"
#include <poll.h>
#include <sys/wait.h>

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static int pidfd_open(pid_t pid, unsigned flags) { return (int)syscall(SYS_pidfd_open, pid, flags); }

static long fdinfo_pid(int fd) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    long v = -2;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Pid:", 4)) v = atol(line + 4);
    if (f) fclose(f);
    return v;
}

static int readable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    pid_t child = SYS(fork());
    if (child == 0) {
        tgt_role = "child";
        for (;;) pause();
    }
    pid_t gone = SYS(fork());
    if (gone == 0) _exit(7);
    int g = SYS(pidfd_open(gone, 0));
    SYS(waitpid(gone, NULL, 0));
    SYS(dup2(SYS(pidfd_open(child, 0)), 10));
    SYS(dup2(SYS(pidfd_open(child, PIDFD_NONBLOCK)), 11));
    SYS(dup2(g, 12));
    for (int fd = 3; fd < 10; fd++) close(fd);
    int outside = argc > 2 && strcmp(argv[2], "outside") == 0;
    pid_t parent = getppid();
    if (outside) {
        int o = SYS(pidfd_open(parent, 0));
        SYS(dup2(o, 13));
        close(o);
    }
    char info[64];
    snprintf(info, sizeof info, "child=%d\n", (int)child);
    tgt_ready(info);
    tgt_wait_verify(NULL);

    CHECK_EQ("fd 10 Pid", fdinfo_pid(10), child);
    CHECK_EQ("fd 11 Pid", fdinfo_pid(11), child);
    CHECK_EQ("fd 12 Pid (reaped)", fdinfo_pid(12), -1);
    CHECK(!readable(10), "fd 10 readable while the child lives");
    CHECK(fcntl(11, F_GETFL) & O_NONBLOCK, "fd 11 lost PIDFD_NONBLOCK");
    CHECK(!(fcntl(10, F_GETFL) & O_NONBLOCK), "fd 10 became non-blocking");
    CHECK(readable(12), "fd 12 (exited process) not readable");
    CHECK(syscall(SYS_pidfd_send_signal, 10, SIGTERM, NULL, 0) == 0, "pidfd_send_signal: %s", strerror(errno));
    siginfo_t si;
    memset(&si, 0, sizeof si);
    CHECK(waitid((idtype_t)P_PIDFD, 10, &si, WEXITED) == 0, "waitid(P_PIDFD): %s", strerror(errno));
    CHECK(si.si_pid == child && si.si_code == CLD_KILLED && si.si_status == SIGTERM, "child ended pid %d code %d status %d",
          (int)si.si_pid, si.si_code, si.si_status);
    CHECK(readable(11), "fd 11 not readable once the child is gone");
    if (outside) CHECK_EQ("fd 13 Pid (the parent)", fdinfo_pid(13), parent);
    tgt_publish_result();
    tgt_idle();
}
