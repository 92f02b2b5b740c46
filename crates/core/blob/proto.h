/*
 * The wire format between tsdump (crates/core/src/parasite/blob.rs) and the resident parasite.
 * One SOCK_SEQPACKET message per request and per reply; both sides are the same machine and
 * architecture, so structs go over the wire as they are. Keep in sync with blob.rs.
 */
#ifndef TSDUMP_BLOB_PROTO_H
#define TSDUMP_BLOB_PROTO_H

#define BLOB_MAGIC 0x7473647062303034ULL /* "tsdpb004": bump with any change to this file */

/* The first message is the blob's: ret = BLOB_MAGIC, out[0] = its channel's fd number. */
enum blob_op {
	BLOB_SYSCALL = 1,  /* a[0] = nr, a[1..6] = args                       -> ret */
	BLOB_PIPES = 2,    /* n pipes, a[0] = wanted capacity                  -> ret = n, out[] = rfd,wfd,cap */
	BLOB_VMSPLICE = 3, /* a[0] = fd, a[1] = flags, n iovecs after the header -> ret */
	BLOB_FINI = 4,     /* close every fd the blob made except the channel  -> ret = 0 */
	BLOB_TASK_INFO = 5, /* a[0] = struct blob_task_info * (scratch), a[1] = 1: timers only;
			     * n timer ids (int) after the header                -> ret = 0 or -errno */
	BLOB_THREAD_INFO = 6, /* a[0] = struct blob_thread_info * (scratch): this thread's answers
			       * (the blob's own thread; others run blob_thread_entry) -> ret */
	BLOB_QUIT = 7,     /* close every fd the blob made, then the channel (tsdump sees EOF), and
			    * linger until tsdump takes the thread back -> no reply */
	BLOB_SNAPSHOT = 8, /* a[0] = struct blob_snapshot * (scratch), a[1] = a stack top in the
			    * scratch for the middle child: fork a holder of the task's memory
			    * as it is now                                  -> ret = holder pid or -errno */
	/* Served by a snapshot holder only (struct blob_snapshot), on its own channel: */
	BLOB_SETFD = 9,    /* one fd passed with SCM_RIGHTS: where BLOB_PWRITE writes -> ret = 0 */
	BLOB_PWRITE = 10,  /* a[0] = file offset, n iovecs of the holder's memory after the header
			    * -> ret = pwritev(fd, iovecs, n, offset) */
};

/* How long a blob that has nothing more to say waits for tsdump to take its thread back before
 * going home on its own (tsdump died in between). */
#define BLOB_LINGER_SEC 5

/* What a thread running blob_thread_entry sends when its answers are in place. */
#define BLOB_THREAD_DONE 0x7473647074686431LL /* ret of the message; out[0] = tid, out[1] = status */

#define BLOB_MAX_IOV 1024
#define BLOB_MAX_PIPES 16

struct blob_req {
	unsigned int op;
	unsigned int n;
	unsigned long long a[7];
	/* BLOB_VMSPLICE: n struct iovec follow */
};

struct blob_rep {
	long long ret;
	long long out[3 * BLOB_MAX_PIPES];
};

/*
 * The answers. Every call's result lands in place; the first failing call stops the command,
 * which returns its -errno with `failed` naming it (BLOB_CALL_*).
 */
enum blob_call {
	BLOB_CALL_SIGACTION = 1, /* + signal - 1 */
	BLOB_CALL_GETITIMER = 100, /* + which */
	BLOB_CALL_DUMPABLE = 110,
	BLOB_CALL_THP = 111,
	BLOB_CALL_SUBREAPER = 112,
	BLOB_CALL_TIMER_GETTIME = 200, /* + index */
	BLOB_CALL_SIGALTSTACK = 0x10000,
	BLOB_CALL_TID_ADDRESS,
	BLOB_CALL_PDEATHSIG,
	BLOB_CALL_NAME,
	BLOB_CALL_RESUID,
	BLOB_CALL_RESGID,
	BLOB_CALL_CAPGET,
	BLOB_CALL_SECUREBITS,
	BLOB_CALL_NO_NEW_PRIVS,
	BLOB_CALL_GETGROUPS,
};

#define BLOB_NSIG 64
#define BLOB_MAX_TIMERS 1024
#define BLOB_MAX_GROUPS 256

struct blob_timer {
	long long interval[2]; /* struct itimerspec */
	long long value[2];
	long long overrun;
};

struct blob_task_info {
	long long err;
	unsigned int failed;
	unsigned int pad;
	unsigned long long sigaction[BLOB_NSIG][4]; /* kernel struct sigaction: handler, flags, restorer, mask */
	long long itimer[3][4]; /* struct itimerval x {REAL, VIRTUAL, PROF} */
	int dumpable;
	int thp_disabled;
	int child_subreaper;
	int pad2;
	long long membarrier; /* MEMBARRIER_CMD_GET_REGISTRATIONS: bits, or -errno */
	struct blob_timer timer[]; /* one per id sent */
};

struct blob_thread_info {
	long long err;
	unsigned int failed;
	unsigned int ngroups; /* may exceed BLOB_MAX_GROUPS: then groups[] is left empty */
	unsigned long long altstack[3]; /* stack_t: sp, flags (int), size */
	unsigned long long clear_tid;
	int pdeath_sig;
	unsigned int securebits;
	int no_new_privs;
	unsigned int fsuid;
	unsigned int fsgid;
	unsigned int ids[6]; /* ruid, euid, suid, rgid, egid, sgid */
	unsigned int cap[6]; /* capget v3: {effective, permitted, inheritable} x {low, high} */
	char name[16];
	unsigned int groups[BLOB_MAX_GROUPS];
};

/* What tsdump writes for a thread it hands to blob_thread_entry. */
struct blob_thread_args {
	unsigned long long magic;
	unsigned long long frame_sp; /* the thread's own way home */
	unsigned long long out;      /* struct blob_thread_info * */
	int ctl;                     /* the channel (the task's fd table is the blob's) */
	int tid;
};

/*
 * A snapshot of the task's memory (dump --snapshot). The blob clones a middle child that shares
 * the task's memory and fd table (CLONE_VM|CLONE_FILES|CLONE_VFORK: the blob's thread sleeps
 * until it is gone); the middle child forks the holder, which gets a copy-on-write copy of every
 * private mapping as it is at this instant, and exits; the blob reaps it. The holder is thereby
 * nobody's child in the tree (it is reparented to the nearest subreaper or init): the
 * application never sees it in wait(). The holder closes every descriptor it inherited, names
 * itself tsdump-snap, connects to tsdump at `addr`, says BLOB_MAGIC and serves BLOB_SETFD and
 * BLOB_PWRITE, every signal blocked, until its channel ends (tsdump is done or died), then exits.
 * It never runs the application's code. It writes its own pages into the pages image tsdump
 * hands it: a plain copy from its memory, which leaves the pages shared with the task (a reader
 * from outside that pins them, as process_vm_readv does, would unshare every one).
 */
struct blob_snapshot {
	long long holder; /* written by the middle child: the holder's pid, or -errno of its fork */
	unsigned int addr_len;
	unsigned int pad;
	unsigned char addr[112]; /* struct sockaddr_un of tsdump's abstract listening socket */
};

/* What tsdump writes at the start of the blob's argument area before handing it control. */
struct blob_args {
	unsigned long long magic;
	unsigned long long frame_sp; /* rt_sigreturn with this stack pointer returns the task home */
	unsigned int addr_len;
	unsigned int failed;     /* written by the blob when it cannot connect: 1 socket(), 2 connect() */
	long long err;           /* ... and that call's -errno (written before `failed`) */
	unsigned char addr[112]; /* struct sockaddr_un of tsdump's abstract listening socket */
};

#endif
