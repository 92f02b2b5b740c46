/*
 * A hugetlb memfd (MFD_HUGETLB, empty: this machine has no huge pages to fault in), held as an
 * fd. tsdump refuses it (CRIU's images need the hugetlb flag and page size for it); the target
 * must be left running untouched. Verification: the fd is still that memfd on hugetlbfs.
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/vfs.h>

#define HUGETLBFS_MAGIC 0x958458f6

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int fd = SYS(memfd_create("tsd-huge", MFD_HUGETLB));
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    char proc[64], link[256] = {0};
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    CHECK(readlink(proc, link, sizeof link - 1) > 0 && !strcmp(link, "/memfd:tsd-huge (deleted)"), "fd is '%s'", link);
    struct statfs fs;
    CHECK(fstatfs(fd, &fs) == 0 && (unsigned long)fs.f_type == HUGETLBFS_MAGIC, "fd no longer on hugetlbfs");
    tgt_publish_result();
    tgt_idle();
}
