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
		go_home(home);
	if (sys6(NR_CONNECT, ctl, (long)args->addr, args->addr_len, 0, 0, 0) < 0)
		goto out;

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
