/*
 * Bench helper: touches and frees SIZE MiB, so that the next timed dump does not pay the VM's
 * first-touch cost for memory the host took back. Usage: mem_touch CTL SIZE_MIB (CTL unused).
 */
#include "common.h"
#include <sys/mman.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    size_t len = strtoul(argv[2], NULL, 10) << 20;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    for (size_t off = 0; off < len; off += 4096) p[off] = 1;
    munmap(p, len);
    return 0;
}
