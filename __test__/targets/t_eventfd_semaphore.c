/*
 * An eventfd in EFD_SEMAPHORE mode with counter 3: each read takes one. Verification: three reads
 * of 1, then EAGAIN. (The mode lives in the eventfd context, not in the file's status flags.)
 *
 * The reference CRIU 4.1.1 restores it as a plain eventfd (one read returns 3); targets.test.ts
 * pins that known failure.
 */
#include "common.h"
#include <sys/eventfd.h>

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int fd = SYS(eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK));
    tgt_ready(NULL);
    tgt_wait_verify(NULL);
    uint64_t got = 0;
    for (int i = 0; i < 3; i++) {
        got = 0;
        ssize_t r = read(fd, &got, sizeof got);
        CHECK(r == 8 && got == 1, "semaphore read %d gave %llu (r=%zd)", i, (unsigned long long)got, r);
    }
    CHECK(read(fd, &got, sizeof got) < 0 && errno == EAGAIN, "more than 3 in the semaphore");
    tgt_publish_result();
    tgt_idle();
}
