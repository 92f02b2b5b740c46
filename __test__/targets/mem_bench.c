/*
 * Bench target: SIZE MiB of private anonymous memory, every page written (no two pages alike),
 * then idle. Usage: mem_bench CTL SIZE_MIB. CTL/ready carries pid= and mib=.
 */
#include "common.h"
#include <sys/mman.h>

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    if (argc < 3) tgt_die("usage: mem_bench CTL SIZE_MIB");
    size_t mib = strtoul(argv[2], NULL, 10), len = mib << 20;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) tgt_die("mmap %zu MiB: %s", mib, strerror(errno));
    for (size_t off = 0; off < len; off += 4096) {
        memset(p + off, (int)(off >> 12), 4096);
        memcpy(p + off, &off, sizeof off);
    }
    char extra[64];
    snprintf(extra, sizeof extra, "mib=%zu\n", mib);
    tgt_ready(extra);
    tgt_wait_verify(NULL);
    tgt_idle();
}
