/* x86_64: syscall numbers, the syscall instruction, the entry and the way home. */
#define NR_CLOSE 3
#define NR_SOCKET 41
#define NR_CONNECT 42
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_FCNTL 72
#define NR_VMSPLICE 278
#define NR_PIPE2 293
#define NR_RT_SIGACTION 13
#define NR_GETITIMER 36
#define NR_GETGROUPS 115
#define NR_GETRESUID 118
#define NR_GETRESGID 120
#define NR_SETFSUID 122
#define NR_SETFSGID 123
#define NR_CAPGET 125
#define NR_SIGALTSTACK 131
#define NR_PRCTL 157
#define NR_TIMER_GETTIME 224
#define NR_TIMER_GETOVERRUN 225
#define NR_PPOLL 271
#define NR_MEMBARRIER 324
#define NR_CLONE 56
#define NR_EXIT 60
#define NR_WAIT4 61
#define NR_EXIT_GROUP 231
#define NR_CLOSE_RANGE 436
#define NR_RECVMSG 47
#define NR_PWRITEV 296

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

/* Entered with %rdi = struct blob_args * (or struct blob_thread_args *) and %rsp = the top of
 * the thread's stack in the scratch. */
__asm__(".section .text.entry,\"ax\"\n"
	".globl blob_entry\n"
	"blob_entry:\n"
	"\tand $-16, %rsp\n"
	"\tcall blob_main\n"
	"\tud2\n"
	".globl blob_thread_entry\n"
	"blob_thread_entry:\n"
	"\tand $-16, %rsp\n"
	"\tcall blob_thread_main\n"
	"\tud2\n"
	/* long snap_clone(flags, stack, arg): clone(2) whose child starts on `stack` in
	 * snap_middle(arg) and never returns here; the parent gets the child's pid or -errno. */
	".globl snap_clone\n"
	"snap_clone:\n"
	"\tmov %rdx, %r9\n"
	"\txor %edx, %edx\n"
	"\txor %r10d, %r10d\n"
	"\txor %r8d, %r8d\n"
	"\tmov $56, %eax\n"
	"\tsyscall\n"
	"\ttest %rax, %rax\n"
	"\tjnz 1f\n"
	"\tmov %r9, %rdi\n"
	"\tand $-16, %rsp\n"
	"\tcall snap_middle\n"
	"\tud2\n"
	"1:\tret\n"
	".previous\n");
