/*
 * An inotify instance watching CTL/watched (IN_CREATE|IN_DELETE) with one event already queued
 * (file "before" created). Verification: the queued event is still there, the watch still fires
 * for a file created after restore, with the same watch descriptor.
 */
#include "common.h"
#include <sys/inotify.h>

static int next_event(int fd, char *name, size_t size, int *wd, uint32_t *mask) {
    static char buf[4096] __attribute__((aligned(8)));
    static ssize_t len, pos;
    if (pos >= len) {
        len = read(fd, buf, sizeof buf);
        pos = 0;
        if (len <= 0) return 0;
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
    char dir[PATH_MAX + 32], file[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/watched", tgt_ctl);
    SYS(mkdir(dir, 0700));
    int fd = SYS(inotify_init1(IN_NONBLOCK));
    int wd = SYS(inotify_add_watch(fd, dir, IN_CREATE | IN_DELETE));
    snprintf(file, sizeof file, "%s/before", dir);
    close(SYS(open(file, O_CREAT | O_WRONLY, 0600)));
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    char name[256];
    int w;
    uint32_t mask;
    CHECK(next_event(fd, name, sizeof name, &w, &mask) && !strcmp(name, "before") && (mask & IN_CREATE) && w == wd,
          "queued IN_CREATE 'before' lost");
    snprintf(file, sizeof file, "%s/after", dir);
    close(open(file, O_CREAT | O_WRONLY, 0600));
    long long deadline = tgt_now_ms() + 1000;
    int found = 0;
    while (!found && tgt_now_ms() < deadline) {
        if (next_event(fd, name, sizeof name, &w, &mask))
            found = !strcmp(name, "after") && (mask & IN_CREATE) && w == wd;
        else
            tgt_sleep_ms(2);
    }
    CHECK(found, "no IN_CREATE for a file created after restore");
    tgt_publish_result();
    tgt_idle();
}
