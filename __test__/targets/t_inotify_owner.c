/*
 * An inotify instance with an owner and nothing queued at dump time: IN_NONBLOCK|IN_CLOEXEC,
 * watching CTL/watched (IN_CREATE|IN_DELETE) and CTL/file (IN_MODIFY), the process as owner
 * (F_SETOWN) and SIGRTMIN+2 as its signal (F_SETSIG). No O_ASYNC: CRIU's restore passes the file
 * flags to inotify_init1(), which refuses it.
 * Verification: flags, owner and signal kept; creating, deleting and modifying files after
 * restore give events with the original watch descriptors.
 * (t_inotify covers an instance with unread events, which CRIU's image cannot carry.)
 */
#include "common.h"
#include <sys/inotify.h>

/* The next event within 1 s, or 0. */
static int next_event(int fd, char *name, size_t size, int *wd, uint32_t *mask) {
    static char buf[4096] __attribute__((aligned(8)));
    static ssize_t len, pos;
    long long deadline = tgt_now_ms() + 1000;
    while (pos >= len) {
        len = read(fd, buf, sizeof buf);
        pos = 0;
        if (len > 0) break;
        if (tgt_now_ms() > deadline) return 0;
        tgt_sleep_ms(2);
    }
    struct inotify_event *ev = (struct inotify_event *)(buf + pos);
    snprintf(name, size, "%s", ev->len ? ev->name : "");
    *wd = ev->wd;
    *mask = ev->mask;
    pos += (ssize_t)sizeof *ev + ev->len;
    return 1;
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char dir[PATH_MAX + 32], file[PATH_MAX + 64], plain[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/watched", tgt_ctl);
    snprintf(plain, sizeof plain, "%s/file", tgt_ctl);
    SYS(mkdir(dir, 0700));
    close(SYS(open(plain, O_CREAT | O_WRONLY, 0600)));

    int fd = SYS(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    int wd_dir = SYS(inotify_add_watch(fd, dir, IN_CREATE | IN_DELETE));
    int wd_file = SYS(inotify_add_watch(fd, plain, IN_MODIFY));
    SYS(fcntl(fd, F_SETSIG, SIGRTMIN + 2));
    SYS(fcntl(fd, F_SETOWN, getpid()));
    char extra[64];
    snprintf(extra, sizeof extra, "inotify=%d\n", fd);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK, "inotify lost O_NONBLOCK");
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC, "inotify lost FD_CLOEXEC");
    CHECK_EQ("F_GETOWN", fcntl(fd, F_GETOWN), getpid());
    CHECK_EQ("F_GETSIG", fcntl(fd, F_GETSIG), SIGRTMIN + 2);

    char name[256];
    int w;
    uint32_t mask;
    snprintf(file, sizeof file, "%s/after", dir);
    close(SYS(open(file, O_CREAT | O_WRONLY, 0600)));
    CHECK(next_event(fd, name, sizeof name, &w, &mask) && !strcmp(name, "after") && (mask & IN_CREATE) && w == wd_dir,
          "no IN_CREATE 'after' on wd %d (got '%s' mask %x wd %d)", wd_dir, name, mask, w);
    SYS(unlink(file));
    CHECK(next_event(fd, name, sizeof name, &w, &mask) && !strcmp(name, "after") && (mask & IN_DELETE) && w == wd_dir,
          "no IN_DELETE 'after' on wd %d", wd_dir);
    int pf = SYS(open(plain, O_WRONLY));
    SYS(write(pf, "x", 1));
    close(pf);
    CHECK(next_event(fd, name, sizeof name, &w, &mask) && (mask & IN_MODIFY) && w == wd_file,
          "no IN_MODIFY on wd %d (got mask %x wd %d)", wd_file, mask, w);
    tgt_publish_result();
    tgt_idle();
}
