/*
 * A task with an io_uring ring mapped: something tsdump cannot dump yet and must refuse by name.
 * CTL/ready carries ring=ADDR. On CTL/verify the ring is still mapped and the fd still works.
 */
#include "common.h"
#include <linux/io_uring.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0) tgt_die("io_uring_setup: %s", strerror(errno));
    size_t len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    void *ring = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (ring == MAP_FAILED) tgt_die("mmap ring: %s", strerror(errno));
    char extra[64];
    snprintf(extra, sizeof extra, "ring=%lx\n", (unsigned long)ring);
    tgt_ready(extra);
    tgt_wait_verify(NULL);
    CHECK(*(volatile unsigned *)((char *)ring + p.sq_off.ring_entries) == p.sq_entries, "ring no longer readable");
    tgt_publish_result();
    tgt_idle();
}
