/*
 * A POSIX message queue held open (mq_open) on fd 20, two messages queued. With the argument
 * "unlinked" its name is removed at once (mq_unlink), as a program keeping a private queue does.
 * A dumper cannot carry a queue's messages (CRIU has no image for them): it must refuse the tree.
 * Verification: the queue still holds both messages, in priority order, and takes a third.
 */
#include "common.h"
#include <mqueue.h>

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char name[64];
    snprintf(name, sizeof name, "/tsdump-test-%d", (int)getpid());
    struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = 32};
    mqd_t q = SYS(mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, &attr));
    SYS(dup2(q, 20));
    close(q);
    SYS(mq_send(20, "low", 4, 1));
    SYS(mq_send(20, "high", 5, 7));
    int unlinked = argc > 2 && !strcmp(argv[2], "unlinked");
    if (unlinked) SYS(mq_unlink(name));
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    char buf[32] = "";
    unsigned prio = 0;
    VSYS(mq_receive(20, buf, sizeof buf, &prio));
    CHECK(prio == 7 && !strcmp(buf, "high"), "first message %s/%u, want high/7", buf, prio);
    VSYS(mq_receive(20, buf, sizeof buf, &prio));
    CHECK(prio == 1 && !strcmp(buf, "low"), "second message %s/%u, want low/1", buf, prio);
    VSYS(mq_send(20, "again", 6, 3));
    if (!unlinked) mq_unlink(name);
    tgt_publish_result();
    tgt_idle();
}
