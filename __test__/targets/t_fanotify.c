/*
 * A fanotify group (FAN_CLASS_NOTIF, non-blocking, close-on-exec) with nothing queued at dump
 * time and two inode marks: CTL/file for FAN_MODIFY|FAN_CLOSE_WRITE, CTL/file2 for FAN_OPEN with
 * FAN_MODIFY in its ignored mask (surviving modification).
 * Verification: flags kept; writing CTL/file reports modify + close-write with an event fd on
 * that inode; opening CTL/file2 reports an open; nothing else arrives.
 * With the argument "queued", CTL/file2 is also opened once before the dump, leaving one
 * FAN_OPEN event unread; verification first expects to read exactly that event.
 */
#include "common.h"
#include <sys/fanotify.h>

/* Events readable within 1 s, OR-ed per inode: *mask1 for ino1, *mask2 for ino2, *other else. */
static void collect(int fd, ino_t ino1, ino_t ino2, uint64_t *mask1, uint64_t *mask2, int *other, uint64_t want1, uint64_t want2) {
    static char buf[4096] __attribute__((aligned(8)));
    long long deadline = tgt_now_ms() + 1000;
    while (tgt_now_ms() < deadline && ((*mask1 & want1) != want1 || (*mask2 & want2) != want2)) {
        ssize_t len = read(fd, buf, sizeof buf);
        if (len <= 0) {
            tgt_sleep_ms(2);
            continue;
        }
        for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, len); m = FAN_EVENT_NEXT(m, len)) {
            struct stat st;
            if (m->fd >= 0 && fstat(m->fd, &st) == 0 && st.st_ino == ino1) *mask1 |= m->mask;
            else if (m->fd >= 0 && fstat(m->fd, &st) == 0 && st.st_ino == ino2) *mask2 |= m->mask;
            else (*other)++;
            if (m->fd >= 0) close(m->fd);
        }
    }
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char file[PATH_MAX + 32], file2[PATH_MAX + 32];
    snprintf(file, sizeof file, "%s/file", tgt_ctl);
    snprintf(file2, sizeof file2, "%s/file2", tgt_ctl);
    close(SYS(open(file, O_CREAT | O_WRONLY, 0600)));
    close(SYS(open(file2, O_CREAT | O_WRONLY, 0600)));
    struct stat st1, st2;
    SYS(stat(file, &st1));
    SYS(stat(file2, &st2));
    int fd = SYS(fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_CLOEXEC, O_RDONLY | O_LARGEFILE));
    SYS(fanotify_mark(fd, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, file));
    SYS(fanotify_mark(fd, FAN_MARK_ADD, FAN_OPEN, AT_FDCWD, file2));
    SYS(fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_MODIFY, AT_FDCWD, file2));
    int queued = argc > 2 && strcmp(argv[2], "queued") == 0;
    if (queued) close(SYS(open(file2, O_RDONLY)));
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    if (queued) {
        uint64_t q1 = 0, q2 = 0;
        int qother = 0;
        collect(fd, st1.st_ino, st2.st_ino, &q1, &q2, &qother, 0, FAN_OPEN);
        CHECK(q2 == FAN_OPEN && q1 == 0 && qother == 0, "queued FAN_OPEN on file2 lost");
    }

    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK, "fanotify lost O_NONBLOCK");
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC, "fanotify lost FD_CLOEXEC");
    int w = SYS(open(file, O_WRONLY));
    SYS(write(w, "x", 1));
    close(w);
    close(SYS(open(file2, O_RDONLY)));
    uint64_t m1 = 0, m2 = 0;
    int other = 0;
    collect(fd, st1.st_ino, st2.st_ino, &m1, &m2, &other, FAN_MODIFY | FAN_CLOSE_WRITE, FAN_OPEN);
    CHECK(m1 == (FAN_MODIFY | FAN_CLOSE_WRITE), "events on file: mask %llx, want modify|close-write", (unsigned long long)m1);
    CHECK(m2 == FAN_OPEN, "events on file2: mask %llx, want open", (unsigned long long)m2);
    CHECK(other == 0, "%d events on other files", other);
    tgt_publish_result();
    tgt_idle();
}
