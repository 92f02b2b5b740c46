/*
 * tsdump's resident parasite: a few hundred bytes of position-independent code that run inside
 * a frozen task and serve tsdump's requests over a unix socket, so the page drain costs one
 * message round trip per pipe load instead of three ptrace stops per syscall.
 *
 * Safety contract (what makes a SIGKILLed tsdump harmless): every descriptor the blob makes is
 * closed by the blob itself, and when the channel ends for any reason (tsdump exited, crashed or
 * was killed; a malformed message) the blob closes them and rt_sigreturns through the frame
 * tsdump built from the thread's own state. The task then carries on in its own code with its
 * own registers, signal mask and FPU state; the mapping holding the blob is the only trace.
 * Pipes keep their read ends open in the task too, so a vmsplice never meets a pipe without
 * readers (SIGPIPE) even if tsdump's ends vanish. All signals are blocked while the blob runs
 * (tsdump sets the mask); replies use MSG_NOSIGNAL.
 *
 * Built by crates/core/build.rs: freestanding, no libc, no writable data, PC-relative only.
 */
#include "proto.h"

#if defined(__x86_64__)
#include "arch-x86_64.h"
#elif defined(__aarch64__)
#include "arch-aarch64.h"
#else
#error "no parasite for this architecture"
#endif

#define AF_UNIX 1
#define SOCK_SEQPACKET 5
#define SOCK_CLOEXEC 02000000
#define O_CLOEXEC 02000000
#define MSG_NOSIGNAL 0x4000
#define F_SETPIPE_SZ 1031
#define F_GETPIPE_SZ 1032
#define EINTR 4
#define EINVAL 22
#define EMFILE 24
#define PR_GET_PDEATHSIG 2
#define PR_GET_DUMPABLE 3
#define PR_GET_NAME 16
#define PR_GET_SECUREBITS 27
#define PR_GET_CHILD_SUBREAPER 37
#define PR_GET_NO_NEW_PRIVS 39
#define PR_GET_TID_ADDRESS 40
#define PR_GET_THP_DISABLE 42
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#define LINUX_CAPABILITY_VERSION_3 0x20080522
#define PR_SET_NAME 15
#define SIGCHLD 17
#define CLONE_VM 0x100
#define CLONE_FS 0x200
#define CLONE_FILES 0x400
#define CLONE_SIGHAND 0x800
#define CLONE_VFORK 0x4000
#define WALL 0x40000000
#define ECHILD 10
#define SOL_SOCKET 1
#define SCM_RIGHTS 1
#define MSG_CMSG_CLOEXEC 0x40000000

/* The offsets crates/core/src/parasite/blob.rs reads the answers at. */
_Static_assert(__builtin_offsetof(struct blob_task_info, sigaction) == 16, "blob_task_info layout");
_Static_assert(__builtin_offsetof(struct blob_task_info, itimer) == 2064, "blob_task_info layout");
_Static_assert(__builtin_offsetof(struct blob_task_info, dumpable) == 2160, "blob_task_info layout");
_Static_assert(__builtin_offsetof(struct blob_task_info, membarrier) == 2176, "blob_task_info layout");
_Static_assert(__builtin_offsetof(struct blob_task_info, timer) == 2184, "blob_task_info layout");
_Static_assert(sizeof(struct blob_timer) == 40, "blob_timer layout");
_Static_assert(__builtin_offsetof(struct blob_thread_info, altstack) == 16, "blob_thread_info layout");
_Static_assert(__builtin_offsetof(struct blob_thread_info, clear_tid) == 40, "blob_thread_info layout");
_Static_assert(__builtin_offsetof(struct blob_thread_info, pdeath_sig) == 48, "blob_thread_info layout");
_Static_assert(__builtin_offsetof(struct blob_thread_info, ids) == 68, "blob_thread_info layout");
_Static_assert(__builtin_offsetof(struct blob_thread_info, cap) == 92, "blob_thread_info layout");
_Static_assert(__builtin_offsetof(struct blob_thread_info, name) == 116, "blob_thread_info layout");
_Static_assert(__builtin_offsetof(struct blob_thread_info, groups) == 132, "blob_thread_info layout");
_Static_assert(sizeof(struct blob_thread_info) == 1160, "blob_thread_info layout");
_Static_assert(sizeof(struct blob_thread_args) == 32, "blob_thread_args layout");
_Static_assert(__builtin_offsetof(struct blob_args, failed) == 20, "blob_args layout");
_Static_assert(__builtin_offsetof(struct blob_args, err) == 24, "blob_args layout");
_Static_assert(__builtin_offsetof(struct blob_args, addr) == 32, "blob_args layout");

struct made {
	int n;
	int fd[2 * BLOB_MAX_PIPES];
};

/* The compiler may emit calls to these for struct copies and clears. */
void *memset(void *d, int c, unsigned long n)
{
	unsigned char *p = d;
	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
	unsigned char *p = d;
	const unsigned char *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

static void close_made(struct made *m)
{
	for (int i = 0; i < m->n; i++)
		sys6(NR_CLOSE, m->fd[i], 0, 0, 0, 0, 0);
	m->n = 0;
}

static long make_pipes(struct made *m, unsigned int n, unsigned long long want, long long *out)
{
	if (n > BLOB_MAX_PIPES)
		return -EINVAL;
	for (unsigned int i = 0; i < n; i++) {
		int p[2];
		if (m->n + 2 > 2 * BLOB_MAX_PIPES)
			return -EMFILE;
		long r = sys6(NR_PIPE2, (long)p, O_CLOEXEC, 0, 0, 0, 0);
		if (r < 0)
			return r;
		m->fd[m->n++] = p[0];
		m->fd[m->n++] = p[1];
		/* A smaller pipe than wanted still works: report what we got. */
		sys6(NR_FCNTL, p[1], F_SETPIPE_SZ, (long)want, 0, 0, 0);
		out[3 * i] = p[0];
		out[3 * i + 1] = p[1];
		out[3 * i + 2] = sys6(NR_FCNTL, p[1], F_GETPIPE_SZ, 0, 0, 0, 0);
	}
	return n;
}

static int is_made(const struct made *m, long fd)
{
	for (int i = 0; i < m->n; i++)
		if (m->fd[i] == fd)
			return 1;
	return 0;
}

/* Records the first failure: its call and -errno. Returns nonzero when `r` failed. */
static int failed(long long *err, unsigned int *which, unsigned int call, long r)
{
	if (r >= 0 || r < -4095)
		return 0;
	*err = r;
	*which = call;
	return 1;
}

/* The process-wide answers: dispositions, itimers, the listed POSIX timers, prctl flags. */
static long task_info(struct blob_task_info *o, unsigned int n, const int *ids, int timers_only)
{
	o->err = 0;
	o->failed = 0;
	if (!timers_only) {
		for (int sig = 1; sig <= BLOB_NSIG; sig++)
			if (failed(&o->err, &o->failed, BLOB_CALL_SIGACTION + sig - 1,
				   sys6(NR_RT_SIGACTION, sig, 0, (long)o->sigaction[sig - 1], 8, 0, 0)))
				return o->err;
		for (int which = 0; which < 3; which++)
			if (failed(&o->err, &o->failed, BLOB_CALL_GETITIMER + which,
				   sys6(NR_GETITIMER, which, (long)o->itimer[which], 0, 0, 0, 0)))
				return o->err;
		long r = sys6(NR_PRCTL, PR_GET_DUMPABLE, 0, 0, 0, 0, 0);
		if (failed(&o->err, &o->failed, BLOB_CALL_DUMPABLE, r))
			return o->err;
		o->dumpable = (int)r;
		r = sys6(NR_PRCTL, PR_GET_THP_DISABLE, 0, 0, 0, 0, 0);
		if (failed(&o->err, &o->failed, BLOB_CALL_THP, r))
			return o->err;
		o->thp_disabled = (int)r;
		if (failed(&o->err, &o->failed, BLOB_CALL_SUBREAPER,
			   sys6(NR_PRCTL, PR_GET_CHILD_SUBREAPER, (long)&o->child_subreaper, 0, 0, 0, 0)))
			return o->err;
		/* absent on older kernels: an answer, not a failure */
		o->membarrier = sys6(NR_MEMBARRIER, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0, 0, 0, 0);
	}
	for (unsigned int i = 0; i < n; i++) {
		struct blob_timer *t = &o->timer[i];
		if (failed(&o->err, &o->failed, BLOB_CALL_TIMER_GETTIME + i,
			   sys6(NR_TIMER_GETTIME, ids[i], (long)t->interval, 0, 0, 0, 0)))
			return o->err;
		t->overrun = sys6(NR_TIMER_GETOVERRUN, ids[i], 0, 0, 0, 0, 0);
		if (failed(&o->err, &o->failed, BLOB_CALL_TIMER_GETTIME + i, t->overrun))
			return o->err;
	}
	return 0;
}

/* The calling thread's answers: sigaltstack, clear-tid address, pdeath signal, name, creds. */
static long thread_info(struct blob_thread_info *o)
{
	struct {
		unsigned int version;
		int pid;
	} hdr = {LINUX_CAPABILITY_VERSION_3, 0};
	o->err = 0;
	o->failed = 0;
	if (failed(&o->err, &o->failed, BLOB_CALL_SIGALTSTACK, sys6(NR_SIGALTSTACK, 0, (long)o->altstack, 0, 0, 0, 0)) ||
	    failed(&o->err, &o->failed, BLOB_CALL_TID_ADDRESS,
		   sys6(NR_PRCTL, PR_GET_TID_ADDRESS, (long)&o->clear_tid, 0, 0, 0, 0)) ||
	    failed(&o->err, &o->failed, BLOB_CALL_PDEATHSIG,
		   sys6(NR_PRCTL, PR_GET_PDEATHSIG, (long)&o->pdeath_sig, 0, 0, 0, 0)) ||
	    failed(&o->err, &o->failed, BLOB_CALL_NAME, sys6(NR_PRCTL, PR_GET_NAME, (long)o->name, 0, 0, 0, 0)) ||
	    failed(&o->err, &o->failed, BLOB_CALL_RESUID,
		   sys6(NR_GETRESUID, (long)&o->ids[0], (long)&o->ids[1], (long)&o->ids[2], 0, 0, 0)) ||
	    failed(&o->err, &o->failed, BLOB_CALL_RESGID,
		   sys6(NR_GETRESGID, (long)&o->ids[3], (long)&o->ids[4], (long)&o->ids[5], 0, 0, 0)) ||
	    failed(&o->err, &o->failed, BLOB_CALL_CAPGET, sys6(NR_CAPGET, (long)&hdr, (long)o->cap, 0, 0, 0, 0)))
		return o->err;
	/* an invalid id changes nothing and returns the current one */
	o->fsuid = (unsigned int)sys6(NR_SETFSUID, -1, 0, 0, 0, 0, 0);
	o->fsgid = (unsigned int)sys6(NR_SETFSGID, -1, 0, 0, 0, 0, 0);
	long r = sys6(NR_PRCTL, PR_GET_SECUREBITS, 0, 0, 0, 0, 0);
	if (failed(&o->err, &o->failed, BLOB_CALL_SECUREBITS, r))
		return o->err;
	o->securebits = (unsigned int)r;
	r = sys6(NR_PRCTL, PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0, 0);
	if (failed(&o->err, &o->failed, BLOB_CALL_NO_NEW_PRIVS, r))
		return o->err;
	o->no_new_privs = (int)r;
	r = sys6(NR_GETGROUPS, 0, 0, 0, 0, 0, 0);
	if (failed(&o->err, &o->failed, BLOB_CALL_GETGROUPS, r))
		return o->err;
	o->ngroups = (unsigned int)r;
	if (r > 0 && r <= BLOB_MAX_GROUPS) {
		r = sys6(NR_GETGROUPS, r, (long)o->groups, 0, 0, 0, 0);
		if (failed(&o->err, &o->failed, BLOB_CALL_GETGROUPS, r))
			return o->err;
		o->ngroups = (unsigned int)r;
	}
	return 0;
}

/*
 * Another thread of the task, handed here by tsdump with its own return frame and every signal
 * blocked: answer, say so on the channel, then wait for tsdump to take the thread back. If the
 * channel ends first (tsdump died), go home. ppoll rather than poll: an interrupted poll() would
 * replace the thread's restart_block, which a thread stopped in nanosleep() still needs.
 */
__attribute__((noreturn, used)) void blob_thread_main(struct blob_thread_args *a)
{
	struct blob_rep rep;
	struct {
		int fd;
		short events, revents;
	} pfd = {a->ctl, 0, 0};
	long r = a->magic == BLOB_MAGIC ? thread_info((struct blob_thread_info *)a->out) : -EINVAL;
	memset(&rep, 0, sizeof(rep));
	rep.ret = BLOB_THREAD_DONE;
	rep.out[0] = a->tid;
	rep.out[1] = r;
	if (sys6(NR_SENDTO, a->ctl, (long)&rep, sizeof(rep), MSG_NOSIGNAL, 0, 0) >= 0)
		while (sys6(NR_PPOLL, (long)&pfd, 1, 0, 0, 8, 0) == -EINTR)
			;
	go_home(a->frame_sp);
}

/*
 * Waits, every signal blocked, for tsdump to take the thread back (it is on its way: it saw the
 * channel close or the failure), then goes home on its own: tsdump died in between. ppoll with no
 * descriptors, not nanosleep: an interrupted nanosleep would replace the thread's restart_block.
 */
__attribute__((noreturn)) static void linger_then_home(unsigned long long home)
{
	long long ts[2] = {BLOB_LINGER_SEC, 0};
	while (sys6(NR_PPOLL, 0, 0, (long)ts, 0, 8, 0) == -EINTR)
		;
	go_home(home);
}

long snap_clone(unsigned long flags, unsigned long stack, void *arg);

/* The holder's requests (struct blob_snapshot in proto.h), until its channel ends. */
static void holder_serve(long ctl)
{
	union {
		struct blob_req req;
		unsigned char raw[sizeof(struct blob_req) + BLOB_MAX_IOV * 16];
	} msg;
	struct {
		unsigned long len; /* struct cmsghdr */
		int level, type;
		int fd;
		int pad;
	} cmsg;
	struct blob_rep rep;
	long fd = -1;
	for (;;) {
		struct {
			unsigned long base, len;
		} iov = {(unsigned long)&msg, sizeof(msg)};
		struct {
			void *name;
			unsigned long namelen;
			void *iov;
			unsigned long iovlen;
			void *control;
			unsigned long controllen;
			int flags, pad;
		} mh = {0, 0, &iov, 1, &cmsg, sizeof(cmsg), 0, 0};
		cmsg.len = 0;
		long n = sys6(NR_RECVMSG, ctl, (long)&mh, MSG_CMSG_CLOEXEC, 0, 0, 0);
		if (n == -EINTR)
			continue;
		if (n < (long)sizeof(struct blob_req))
			return;
		long got = -1;
		if (mh.controllen >= 20 && cmsg.level == SOL_SOCKET && cmsg.type == SCM_RIGHTS)
			got = cmsg.fd;
		struct blob_req *q = &msg.req;
		memset(&rep, 0, sizeof(rep));
		rep.ret = -EINVAL;
		if (q->op == BLOB_SETFD && got >= 0) {
			if (fd >= 0)
				sys6(NR_CLOSE, fd, 0, 0, 0, 0, 0);
			fd = got;
			got = -1;
			rep.ret = 0;
		} else if (q->op == BLOB_PWRITE && fd >= 0 && q->n <= BLOB_MAX_IOV &&
			   n == (long)(sizeof(struct blob_req) + q->n * 16UL)) {
			rep.ret = sys6(NR_PWRITEV, fd, (long)(msg.raw + sizeof(struct blob_req)), q->n, (long)q->a[0], 0, 0);
		}
		if (got >= 0)
			sys6(NR_CLOSE, got, 0, 0, 0, 0, 0);
		if (sys6(NR_SENDTO, ctl, (long)&rep, sizeof(rep), MSG_NOSIGNAL, 0, 0) < 0)
			return;
	}
}

/* The holder: serves its channel to tsdump, then exits. */
__attribute__((noreturn)) static void snap_holder(struct blob_snapshot *s)
{
	struct blob_rep rep;
	sys6(NR_CLOSE_RANGE, 0, ~0U, 0, 0, 0, 0);
	sys6(NR_PRCTL, PR_SET_NAME, (long)"tsdump-snap", 0, 0, 0, 0);
	long ctl = sys6(NR_SOCKET, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, 0, 0, 0);
	if (ctl >= 0 && sys6(NR_CONNECT, ctl, (long)s->addr, s->addr_len, 0, 0, 0) >= 0) {
		memset(&rep, 0, sizeof(rep));
		rep.ret = (long long)BLOB_MAGIC;
		if (sys6(NR_SENDTO, ctl, (long)&rep, sizeof(rep), MSG_NOSIGNAL, 0, 0) >= 0)
			holder_serve(ctl);
	}
	for (;;)
		sys6(NR_EXIT_GROUP, 0, 0, 0, 0, 0, 0);
}

/* The middle child: shares the task's memory; forks the holder, says its pid, exits. */
__attribute__((noreturn, used)) void snap_middle(struct blob_snapshot *s)
{
	long r = sys6(NR_CLONE, SIGCHLD, 0, 0, 0, 0, 0);
	if (r == 0)
		snap_holder(s);
	s->holder = r;
	for (;;)
		sys6(NR_EXIT, 0, 0, 0, 0, 0, 0);
}

static long snapshot(struct blob_snapshot *s, unsigned long stack)
{
	int status;
	s->holder = -EINVAL;
	long mid = snap_clone(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_VFORK, stack, s);
	if (mid < 0)
		return mid;
	long w;
	while ((w = sys6(NR_WAIT4, mid, (long)&status, WALL, 0, 0, 0)) == -EINTR)
		;
	/* ECHILD: a task that ignores SIGCHLD reaped it already */
	if (w < 0 && w != -ECHILD)
		return w;
	return s->holder;
}

/* The blob could not reach tsdump: say why where tsdump looks while it waits, and linger. */
__attribute__((noreturn)) static void refuse(struct blob_args *args, unsigned int call, long err)
{
	args->err = err;
	__atomic_store_n(&args->failed, call, __ATOMIC_RELEASE);
	linger_then_home(args->frame_sp);
}

__attribute__((noreturn, used)) void blob_main(struct blob_args *args)
{
	unsigned long long home = args->frame_sp;
	union {
		struct blob_req req;
		unsigned char raw[sizeof(struct blob_req) + BLOB_MAX_IOV * 16];
	} msg;
	struct blob_rep rep;
	struct made made;
	made.n = 0;

	long ctl = sys6(NR_SOCKET, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, 0, 0, 0);
	if (ctl < 0)
		refuse(args, 1, ctl);
	long r = sys6(NR_CONNECT, ctl, (long)args->addr, args->addr_len, 0, 0, 0);
	if (r < 0) {
		sys6(NR_CLOSE, ctl, 0, 0, 0, 0, 0);
		refuse(args, 2, r);
	}

	memset(&rep, 0, sizeof(rep));
	rep.ret = (long long)BLOB_MAGIC;
	rep.out[0] = ctl; /* for tsdump's final close, after the thread has left the blob */
	if (sys6(NR_SENDTO, ctl, (long)&rep, sizeof(rep), MSG_NOSIGNAL, 0, 0) < 0)
		goto out;

	for (;;) {
		long n = sys6(NR_RECVFROM, ctl, (long)&msg, sizeof(msg), 0, 0, 0);
		if (n == -EINTR)
			continue;
		if (n < (long)sizeof(struct blob_req))
			break; /* EOF: tsdump is gone (or done) */
		struct blob_req *q = &msg.req;
		memset(&rep, 0, sizeof(rep));
		switch (q->op) {
		case BLOB_SYSCALL:
			rep.ret = sys6((long)q->a[0], (long)q->a[1], (long)q->a[2], (long)q->a[3], (long)q->a[4],
				       (long)q->a[5], (long)q->a[6]);
			break;
		case BLOB_PIPES:
			rep.ret = make_pipes(&made, q->n, q->a[0], rep.out);
			break;
		case BLOB_VMSPLICE:
			/* Only into our own pipes, and only with exactly the iovecs that came along. */
			if (q->n > BLOB_MAX_IOV || n != (long)(sizeof(struct blob_req) + q->n * 16UL) || !is_made(&made, (long)q->a[0]))
				rep.ret = -EINVAL;
			else
				rep.ret = sys6(NR_VMSPLICE, (long)q->a[0], (long)(msg.raw + sizeof(struct blob_req)), q->n,
					       (long)q->a[1], 0, 0);
			break;
		case BLOB_FINI:
			close_made(&made);
			rep.ret = 0;
			break;
		case BLOB_TASK_INFO:
			if (q->n > BLOB_MAX_TIMERS || n != (long)(sizeof(struct blob_req) + q->n * sizeof(int)))
				rep.ret = -EINVAL;
			else
				rep.ret = task_info((struct blob_task_info *)q->a[0], q->n,
						    (const int *)(msg.raw + sizeof(struct blob_req)), q->a[1] == 1);
			break;
		case BLOB_THREAD_INFO:
			rep.ret = thread_info((struct blob_thread_info *)q->a[0]);
			break;
		case BLOB_SNAPSHOT:
			rep.ret = snapshot((struct blob_snapshot *)q->a[0], (unsigned long)q->a[1]);
			break;
		case BLOB_QUIT:
			close_made(&made);
			sys6(NR_CLOSE, ctl, 0, 0, 0, 0, 0);
			linger_then_home(home);
		default:
			rep.ret = -EINVAL;
		}
		if (sys6(NR_SENDTO, ctl, (long)&rep, sizeof(rep), MSG_NOSIGNAL, 0, 0) < 0)
			break;
	}
out:
	close_made(&made);
	sys6(NR_CLOSE, ctl, 0, 0, 0, 0, 0);
	go_home(home);
}
