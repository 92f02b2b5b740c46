/*
 * LD_PRELOAD shim for the reference CRIU, used only by __test__/dump-tcp.test.ts to get a CRIU
 * dump of a process holding inet sockets to compare tsdump's images with.
 *
 * CRIU 4.1.1 asks getsockopt(SOL_SOCKET, SO_PASSCRED/SO_PASSSEC) of every socket it dumps; this
 * kernel answers EOPNOTSUPP for inet sockets and CRIU gives up on the whole dump. These options
 * only mean something for unix and netlink sockets, so the shim turns exactly that refusal into
 * "off" — what tsdump records for inet sockets — and leaves every other call alone.
 */
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*getsockopt_fn)(int, int, int, void *, socklen_t *);

int getsockopt(int fd, int level, int name, void *value, socklen_t *len) {
    static getsockopt_fn real;
    if (!real) real = (getsockopt_fn)dlsym(RTLD_NEXT, "getsockopt");
    int r = real(fd, level, name, value, len);
    if (r < 0 && errno == EOPNOTSUPP && level == SOL_SOCKET && (name == SO_PASSCRED || name == SO_PASSSEC) &&
        value && len && *len >= sizeof(int)) {
        memset(value, 0, sizeof(int));
        *len = sizeof(int);
        return 0;
    }
    return r;
}
