/*
 * The wire format between tsdump (crates/core/src/parasite/blob.rs) and the resident parasite.
 * One SOCK_SEQPACKET message per request and per reply; both sides are the same machine and
 * architecture, so structs go over the wire as they are. Keep in sync with blob.rs.
 */
#ifndef TSDUMP_BLOB_PROTO_H
#define TSDUMP_BLOB_PROTO_H

#define BLOB_MAGIC 0x7473647062303031ULL /* "tsdpb001": bump with any change to this file */

/* The first message is the blob's: ret = BLOB_MAGIC, out[0] = its channel's fd number. */
enum blob_op {
	BLOB_SYSCALL = 1,  /* a[0] = nr, a[1..6] = args                       -> ret */
	BLOB_PIPES = 2,    /* n pipes, a[0] = wanted capacity                  -> ret = n, out[] = rfd,wfd,cap */
	BLOB_VMSPLICE = 3, /* a[0] = fd, a[1] = flags, n iovecs after the header -> ret */
	BLOB_FINI = 4,     /* close every fd the blob made except the channel  -> ret = 0 */
};

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

/* What tsdump writes at the start of the blob's argument area before handing it control. */
struct blob_args {
	unsigned long long magic;
	unsigned long long frame_sp; /* rt_sigreturn with this stack pointer returns the task home */
	unsigned int addr_len;
	unsigned int pad;
	unsigned char addr[112]; /* struct sockaddr_un of tsdump's abstract listening socket */
};

#endif
