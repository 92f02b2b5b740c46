/*
 * Every general register a thread holds, by name: a thread spins in a loop that keeps a distinct
 * value in each of rbx, rcx, rdx, rsi, rdi, rbp and r8-r15 and checks them all on every pass,
 * counting passes. A dump catches it anywhere in that loop; a restore that puts one register's
 * value into another (a name swapped between the kernel's user_regs_struct and the image) makes
 * the loop see it. A second thread sleeps in pause() with its own pattern in the callee-saved
 * registers (rbx, r12-r15), which come back through the interrupted, restarted call.
 * Verification: the spinner never saw a wrong value and still counts; the sleeper, woken by a
 * signal, finds its registers as it left them.
 * On other CPUs the target only idles (the registers are x86_64's).
 */
#include "common.h"
#include <pthread.h>

volatile uint64_t spin_passes, spin_bad, sleeper_bad, sleeper_done;

#if defined(__x86_64__)
/* Register number n (1-14, in the order below) holds 0x5eed_nn00_0000_00nn. */
__asm__(".text\n"
        ".globl spin_regs\n"
        ".type spin_regs,@function\n"
        "spin_regs:\n"
        "  movabs $0x5eed010000000001, %rbx\n"
        "  movabs $0x5eed020000000002, %rcx\n"
        "  movabs $0x5eed030000000003, %rdx\n"
        "  movabs $0x5eed040000000004, %rsi\n"
        "  movabs $0x5eed050000000005, %rdi\n"
        "  movabs $0x5eed060000000006, %rbp\n"
        "  movabs $0x5eed070000000007, %r8\n"
        "  movabs $0x5eed080000000008, %r9\n"
        "  movabs $0x5eed090000000009, %r10\n"
        "  movabs $0x5eed0a000000000a, %r11\n"
        "  movabs $0x5eed0b000000000b, %r12\n"
        "  movabs $0x5eed0c000000000c, %r13\n"
        "  movabs $0x5eed0d000000000d, %r14\n"
        "  movabs $0x5eed0e000000000e, %r15\n"
        "1:\n"
        "  movabs $0x5eed010000000001, %rax\n  cmp %rax, %rbx\n  jne 2f\n"
        "  movabs $0x5eed020000000002, %rax\n  cmp %rax, %rcx\n  jne 2f\n"
        "  movabs $0x5eed030000000003, %rax\n  cmp %rax, %rdx\n  jne 2f\n"
        "  movabs $0x5eed040000000004, %rax\n  cmp %rax, %rsi\n  jne 2f\n"
        "  movabs $0x5eed050000000005, %rax\n  cmp %rax, %rdi\n  jne 2f\n"
        "  movabs $0x5eed060000000006, %rax\n  cmp %rax, %rbp\n  jne 2f\n"
        "  movabs $0x5eed070000000007, %rax\n  cmp %rax, %r8\n  jne 2f\n"
        "  movabs $0x5eed080000000008, %rax\n  cmp %rax, %r9\n  jne 2f\n"
        "  movabs $0x5eed090000000009, %rax\n  cmp %rax, %r10\n  jne 2f\n"
        "  movabs $0x5eed0a000000000a, %rax\n  cmp %rax, %r11\n  jne 2f\n"
        "  movabs $0x5eed0b000000000b, %rax\n  cmp %rax, %r12\n  jne 2f\n"
        "  movabs $0x5eed0c000000000c, %rax\n  cmp %rax, %r13\n  jne 2f\n"
        "  movabs $0x5eed0d000000000d, %rax\n  cmp %rax, %r14\n  jne 2f\n"
        "  movabs $0x5eed0e000000000e, %rax\n  cmp %rax, %r15\n  jne 2f\n"
        "  lock addq $1, spin_passes(%rip)\n"
        "  jmp 1b\n"
        "2:\n"
        "  movq $1, spin_bad(%rip)\n"
        "3:\n"
        "  pause\n"
        "  jmp 3b\n");
void spin_regs(void);

static void *spinner(void *arg) {
    (void)arg;
    spin_regs(); /* never returns */
    return NULL;
}

static void on_wake(int sig) { (void)sig; }

/* pause() with a pattern in the registers a syscall must preserve; checked when it returns. */
static void *sleeper(void *arg) {
    (void)arg;
    uint64_t bad;
    __asm__ volatile(
                     "movabs $0x51ee900000000001, %%rbx\n"
                     "movabs $0x51ee900000000002, %%r12\n"
                     "movabs $0x51ee900000000003, %%r13\n"
                     "movabs $0x51ee900000000004, %%r14\n"
                     "movabs $0x51ee900000000005, %%r15\n"
                     "mov $34, %%eax\n" /* pause */
                     "syscall\n"
                     "xor %%eax, %%eax\n"
                     "movabs $0x51ee900000000001, %%rdx\n cmp %%rdx, %%rbx\n setne %%cl\n or %%cl, %%al\n"
                     "movabs $0x51ee900000000002, %%rdx\n cmp %%rdx, %%r12\n setne %%cl\n or %%cl, %%al\n"
                     "movabs $0x51ee900000000003, %%rdx\n cmp %%rdx, %%r13\n setne %%cl\n or %%cl, %%al\n"
                     "movabs $0x51ee900000000004, %%rdx\n cmp %%rdx, %%r14\n setne %%cl\n or %%cl, %%al\n"
                     "movabs $0x51ee900000000005, %%rdx\n cmp %%rdx, %%r15\n setne %%cl\n or %%cl, %%al\n"
                     "movzbq %%al, %0\n"
                     : "=a"(bad)
                     :
                     : "rbx", "rcx", "rdx", "r11", "r12", "r13", "r14", "r15", "memory", "cc");
    sleeper_bad = bad;
    sleeper_done = 1;
    return NULL;
}
#endif

int main(int argc, char **argv) {
    tgt_init(argc, argv);
#if defined(__x86_64__)
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_wake;
    SYS(sigaction(SIGUSR2, &sa, NULL));
    pthread_t spin, sleep_thread;
    if (pthread_create(&spin, NULL, spinner, NULL) || pthread_create(&sleep_thread, NULL, sleeper, NULL)) tgt_die("pthread_create");
    while (spin_passes < 1000) usleep(1000);
    usleep(20000); /* the sleeper is in pause() by now */
    tgt_ready(NULL);
    tgt_wait_verify(NULL);
    uint64_t before = spin_passes;
    /* up to 5 s: with dozens of targets on two cores the spinner may wait for a core a while */
    for (int i = 0; i < 5000 && spin_passes == before; i++) usleep(1000);
    CHECK(spin_bad == 0, "the spinner saw a general register holding another's value");
    CHECK(spin_passes > before, "the spinner stopped counting (%llu passes)", (unsigned long long)before);
    pthread_kill(sleep_thread, SIGUSR2);
    for (int i = 0; i < 1000 && !sleeper_done; i++) usleep(1000);
    CHECK(sleeper_done, "the sleeper did not come back from pause()");
    CHECK(sleeper_bad == 0, "the sleeper's callee-saved registers changed across pause()");
#else
    tgt_ready(NULL);
    tgt_wait_verify(NULL);
#endif
    tgt_publish_result();
    tgt_idle();
}
