/*
 * Credentials kept in the task's creds rather than in memory or files:
 *   fsuid 1000 and fsgid 1003 beside real/effective/saved ids of 0 (a task whose real, effective
 *   or saved ids differ from the dumper's needs CAP_SYS_RESOURCE to have its rlimits read, which
 *   these machines' root lacks); supplementary groups {5, 1001, 1002}
 *   capabilities: CAP_SYS_TIME out of the permitted set, CAP_NET_RAW and CAP_MKNOD out of the
 *   effective one, CAP_NET_BIND_SERVICE and CAP_KILL inheritable, CAP_NET_BIND_SERVICE ambient,
 *   CAP_SYS_BOOT and CAP_AUDIT_WRITE dropped from the bounding set
 *   securebits KEEP_CAPS | NO_SETUID_FIXUP (the latter keeps the file-access capabilities under
 *   a non-zero fsuid, so the target still writes its control directory)
 * Verification: /proc/self/status's Uid, Gid, Groups and Cap* lines are exactly those at setup;
 * setfsuid/setfsgid, getgroups, PR_GET_SECUREBITS and the prctl reads give the values set; the
 * kernel enforces them: a raw socket is refused (CAP_NET_RAW not effective).
 */
#include "common.h"
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <netinet/in.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/socket.h>

static const gid_t groups[] = {5, 1001, 1002};

/* The lines of /proc/self/status that carry credentials, concatenated. */
static void status_creds(char *out, size_t size) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t off = 0;
    out[0] = 0;
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "Uid:", 4) && strncmp(line, "Gid:", 4) && strncmp(line, "Groups:", 7) &&
            strncmp(line, "Cap", 3))
            continue;
        size_t n = strlen(line);
        if (off + n >= size) break;
        memcpy(out + off, line, n + 1);
        off += n;
    }
    fclose(f);
}

static int caps_get(struct __user_cap_data_struct d[2]) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    return (int)syscall(SYS_capget, &h, d);
}

static int caps_set(struct __user_cap_data_struct d[2]) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    return (int)syscall(SYS_capset, &h, d);
}

#define BIT(c) (1u << ((c) & 31))
#define WORD(c) ((c) >> 5)

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    SYS(setgroups(sizeof groups / sizeof groups[0], groups));
    SYS(prctl(PR_SET_SECUREBITS, SECBIT_KEEP_CAPS | SECBIT_NO_SETUID_FIXUP, 0, 0, 0));
    SYS(prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0));
    SYS(prctl(PR_CAPBSET_DROP, CAP_AUDIT_WRITE, 0, 0, 0));
    struct __user_cap_data_struct d[2];
    SYS(caps_get(d));
    d[WORD(CAP_SYS_TIME)].permitted &= ~BIT(CAP_SYS_TIME);
    d[WORD(CAP_SYS_TIME)].effective &= ~BIT(CAP_SYS_TIME);
    d[WORD(CAP_NET_RAW)].effective &= ~BIT(CAP_NET_RAW);
    d[WORD(CAP_MKNOD)].effective &= ~BIT(CAP_MKNOD);
    d[WORD(CAP_NET_BIND_SERVICE)].inheritable |= BIT(CAP_NET_BIND_SERVICE);
    d[WORD(CAP_KILL)].inheritable |= BIT(CAP_KILL);
    SYS(caps_set(d));
    SYS(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0));
    setfsuid(1000);
    setfsgid(1003);

    char before[2048], after[2048];
    status_creds(before, sizeof before);
    tgt_log("credentials at setup:\n%s", before);
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    status_creds(after, sizeof after);
    CHECK(!strcmp(before, after), "/proc/self/status credentials changed:\n%s--- now ---\n%s", before, after);
    CHECK_EQ("fsuid", setfsuid(-1), 1000);
    CHECK_EQ("fsgid", setfsgid(-1), 1003);
    gid_t now[16];
    int n = getgroups(16, now);
    CHECK(n == 3 && !memcmp(now, groups, sizeof groups), "getgroups gave %d groups", n);
    CHECK_EQ("securebits", prctl(PR_GET_SECUREBITS, 0, 0, 0, 0), SECBIT_KEEP_CAPS | SECBIT_NO_SETUID_FIXUP);
    CHECK_EQ("CAP_SYS_BOOT in the bounding set", prctl(PR_CAPBSET_READ, CAP_SYS_BOOT, 0, 0, 0), 0);
    CHECK_EQ("CAP_KILL in the bounding set", prctl(PR_CAPBSET_READ, CAP_KILL, 0, 0, 0), 1);
    CHECK_EQ("CAP_NET_BIND_SERVICE ambient", prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND_SERVICE, 0, 0), 1);
    int raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    CHECK(raw < 0 && errno == EPERM, "a raw socket without CAP_NET_RAW: got %d (%s), want EPERM", raw, strerror(errno));
    if (raw >= 0) close(raw);
    tgt_publish_result();
    tgt_idle();
}
