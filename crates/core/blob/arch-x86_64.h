/* x86_64: syscall numbers, the syscall instruction, the entry and the way home. */
#define NR_CLOSE 3
#define NR_SOCKET 41
#define NR_CONNECT 42
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_FCNTL 72
#define NR_VMSPLICE 278
#define NR_PIPE2 293

static inline long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

/* The rt_sigframe tsdump built is at sp - 8 (its pretcode slot): rt_sigreturn from there. */
__attribute__((noreturn)) static inline void go_home(unsigned long long sp)
{
	__asm__ volatile("mov %0, %%rsp\n\tmov $15, %%eax\n\tsyscall\n\tud2" : : "r"(sp) : "memory");
	__builtin_unreachable();
}

/* Entered with %rdi = struct blob_args * and %rsp = the top of the blob's stack. */
__asm__(".section .text.entry,\"ax\"\n"
	".globl blob_entry\n"
	"blob_entry:\n"
	"\tand $-16, %rsp\n"
	"\tcall blob_main\n"
	"\tud2\n"
	".previous\n");
