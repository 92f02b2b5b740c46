/* aarch64: syscall numbers, the svc instruction, the entry and the way home. */
#define NR_FCNTL 25
#define NR_CLOSE 57
#define NR_PIPE2 59
#define NR_VMSPLICE 75
#define NR_SOCKET 198
#define NR_CONNECT 203
#define NR_SENDTO 206
#define NR_RECVFROM 207
#define NR_PPOLL 73
#define NR_CAPGET 90
#define NR_GETITIMER 102
#define NR_TIMER_GETTIME 108
#define NR_TIMER_GETOVERRUN 109
#define NR_SIGALTSTACK 132
#define NR_RT_SIGACTION 134
#define NR_GETRESUID 148
#define NR_GETRESGID 150
#define NR_SETFSUID 151
#define NR_SETFSGID 152
#define NR_GETGROUPS 158
#define NR_PRCTL 167
#define NR_MEMBARRIER 283
#define NR_EXIT 93
#define NR_EXIT_GROUP 94
#define NR_CLONE 220
#define NR_WAIT4 260
#define NR_CLOSE_RANGE 436
#define NR_PWRITEV 70
#define NR_RECVMSG 212

static inline long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = nr;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
	return x0;
}

/* arm64's rt_sigreturn takes the frame at sp itself. */
__attribute__((noreturn)) static inline void go_home(unsigned long long sp)
{
	__asm__ volatile("mov sp, %0\n\tmov x8, #139\n\tsvc #0\n\tbrk #0" : : "r"(sp) : "memory");
	__builtin_unreachable();
}

__asm__(".section .text.entry,\"ax\"\n"
	".globl blob_entry\n"
	"blob_entry:\n"
	"\tmov x9, sp\n"
	"\tand x9, x9, #~15\n"
	"\tmov sp, x9\n"
	"\tbl blob_main\n"
	"\tbrk #0\n"
	".globl blob_thread_entry\n"
	"blob_thread_entry:\n"
	"\tmov x9, sp\n"
	"\tand x9, x9, #~15\n"
	"\tmov sp, x9\n"
	"\tbl blob_thread_main\n"
	"\tbrk #0\n"
	/* long snap_clone(flags, stack, arg): see arch-x86_64.h (clone: flags, sp, ptid, tls, ctid) */
	".globl snap_clone\n"
	"snap_clone:\n"
	"\tmov x9, x2\n"
	"\tmov x2, #0\n"
	"\tmov x3, #0\n"
	"\tmov x4, #0\n"
	"\tmov x8, #220\n"
	"\tsvc #0\n"
	"\tcbnz x0, 1f\n"
	"\tmov x0, x9\n"
	"\tbl snap_middle\n"
	"\tbrk #0\n"
	"1:\tret\n"
	".previous\n");
