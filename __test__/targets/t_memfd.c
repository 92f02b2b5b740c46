/*
 * A memfd (64 KiB, patterned) held both as an fd at offset 1234 and as a MAP_SHARED mapping, plus
 * a sealed memfd (F_SEAL_GROW|F_SEAL_SHRINK). Verification: contents through fd and mapping,
 * offset, the mapping still shares the memfd's pages both ways, seals kept (ftruncate refused).
 */
#include "common.h"
#include <sys/mman.h>

#define LEN (64 * 1024)

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int fd = SYS(memfd_create("tsd-memfd", MFD_ALLOW_SEALING));
    SYS(ftruncate(fd, LEN));
    uint8_t *map = SYS(mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    tgt_fill(map, LEN, 90);
    SYS(lseek(fd, 1234, SEEK_SET));
    int sealed = SYS(memfd_create("tsd-sealed", MFD_ALLOW_SEALING));
    SYS(ftruncate(sealed, 4096));
    SYS(pwrite(sealed, "sealed!", 7, 0));
    SYS(fcntl(sealed, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK));
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    long off = tgt_check_fill(map, LEN, 90);
    if (off >= 0) FAIL("memfd mapping differs at +%ld", off);
    static uint8_t buf[LEN];
    CHECK(pread(fd, buf, LEN, 0) == LEN && tgt_check_fill(buf, LEN, 90) < 0, "memfd contents via fd differ");
    CHECK_EQ("memfd offset", lseek(fd, 0, SEEK_CUR), 1234);
    map[5] = 0x42;
    CHECK(pread(fd, buf, 8, 0) == 8 && buf[5] == 0x42, "mapping no longer shares the memfd (map -> fd)");
    CHECK(pwrite(fd, "\x77", 1, 9) == 1 && map[9] == 0x77, "mapping no longer shares the memfd (fd -> map)");
    char link[256] = {0}, proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    CHECK(readlink(proc, link, sizeof link - 1) > 0 && strstr(link, "memfd:tsd-memfd"), "fd is '%s'", link);
    CHECK_EQ("seals", fcntl(sealed, F_GET_SEALS), F_SEAL_GROW | F_SEAL_SHRINK);
    CHECK(ftruncate(sealed, 8192) < 0 && errno == EPERM, "sealed memfd could grow");
    char s[8] = {0};
    CHECK(pread(sealed, s, 7, 0) == 7 && !strcmp(s, "sealed!"), "sealed memfd contents");
    tgt_publish_result();
    tgt_idle();
}
