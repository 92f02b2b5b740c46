/*
 * A task whose seccomp filter denies userfaultfd(2) (errno 77), holding 4 MiB of patterned
 * memory. tsdump's memory tracking creates its userfaultfd *inside* the task, so a pre-dump
 * gets past this filter only if it suspends seccomp for its parasite, as CRIU does. After
 * restore the task checks its memory and that the filter still denies userfaultfd to itself.
 */
#include "common.h"
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#define E_UFFD 77
#define REGION (4u << 20)

static struct sock_filter deny_uffd[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 3),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | E_UFFD),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

static uint32_t pattern(size_t i) { return (uint32_t)(i * 2654435761u) ^ 0x5eccu; }

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    uint32_t *mem = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) tgt_die("mmap");
    for (size_t i = 0; i < REGION / 4; i++) mem[i] = pattern(i);
    SYS(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
    struct sock_fprog f = {.len = sizeof deny_uffd / sizeof deny_uffd[0], .filter = deny_uffd};
    SYS(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &f));
    errno = 0;
    if (syscall(SYS_userfaultfd, 0) != -1 || errno != E_UFFD) tgt_die("the filter does not deny userfaultfd");
    tgt_ready(NULL);
    while (!tgt_ctl_exists("verify")) tgt_sleep_ms(5);
    size_t bad = 0;
    for (size_t i = 0; i < REGION / 4; i++) bad += mem[i] != pattern(i);
    CHECK_EQ("words that lost their pattern", bad, 0);
    errno = 0;
    long r = syscall(SYS_userfaultfd, 0);
    CHECK(r == -1 && errno == E_UFFD, "userfaultfd after restore: %ld errno %d (want -1 errno %d)", r, errno, E_UFFD);
    tgt_publish_result();
    for (;;) tgt_sleep_ms(1000);
}
