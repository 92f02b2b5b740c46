/*
 * SysV IPC objects of a process tree, for dumps that carry them as the tree's IPC namespace:
 *   segment A (key KEY_BASE+1, 3 pages + 100 bytes, mode 0640): attached read-write by the root and
 *     by its child, which write-protected its middle page (three VMAs of one attachment);
 *   segment B (IPC_PRIVATE, 2 pages): attached read-only by the root;
 *   segment C (key KEY_BASE+3, 1 page): created and filled by the root, then detached (nobody
 *     attaches it; it is the tree's because the root created it);
 *   a semaphore set (key KEY_BASE+4) of 3 semaphores at 1, 2, 3 after a semop of the root's;
 *   a message queue (key KEY_BASE+5) with 2 messages the root sent.
 * `t_sysv_ipc CTL own` first moves into an IPC namespace of its own (unshare), as `unshare -i`
 * would. `t_sysv_ipc CTL outsider KEY_BASE shm|sem` is not dumped: a process outside the tree
 * that attaches segment A, or operates on the semaphore set, so that the tree's objects are
 * shared. CTL/ready carries ns= (the IPC namespace inode at start) and the ids.
 *
 * Verification (CTL/expect "live" or "restored"): same ids under the same keys, sizes, modes and
 * contents; the root's writes into A reach the child and the child's reach the root; B is still
 * read-only; the semaphores keep their values and still work; both messages come out in order;
 * nattch counts the tree's VMAs; restored, the tree is not in the IPC namespace it was started in.
 */
#include "common.h"
#include <sched.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define PAGE 4096
#define A_SIZE (3 * PAGE + 100)
#define B_SIZE (2 * PAGE)
#define C_SIZE PAGE

static int shm_a, shm_b, shm_c, sem_id, msq;
static unsigned char *a, *b;

struct msg {
    long mtype;
    char text[64];
};

static unsigned long long ns_inode(void) {
    struct stat st;
    return stat("/proc/self/ns/ipc", &st) == 0 ? (unsigned long long)st.st_ino : 0;
}

static void check_segment(const char *what, key_t key, int id, size_t size, unsigned mode) {
    struct shmid_ds ds;
    int got = key == IPC_PRIVATE ? id : shmget(key, 0, 0);
    CHECK_EQ(what, got, id);
    if (shmctl(id, IPC_STAT, &ds) != 0) {
        FAIL("%s: IPC_STAT: %s", what, strerror(errno));
        return;
    }
    CHECK(ds.shm_segsz == size, "%s: size %zu, want %zu", what, (size_t)ds.shm_segsz, size);
    CHECK((ds.shm_perm.mode & 0777) == mode, "%s: mode %o, want %o", what, ds.shm_perm.mode & 0777, mode);
}

/* The perms column of our mapping at `p` in /proc/self/maps. */
static void perms_at(void *p, char out[5]) {
    char line[512];
    strcpy(out, "????");
    FILE *f = fopen("/proc/self/maps", "r");
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &s, &e, perms) == 3 && (unsigned long)p >= s && (unsigned long)p < e) {
            memcpy(out, perms, 5);
            break;
        }
    }
    if (f) fclose(f);
}

static void child_main(void) {
    tgt_role = "child";
    /* the middle page read-only: one attachment, three VMAs */
    if (mprotect(a + PAGE, PAGE, PROT_READ) != 0) tgt_die("mprotect");
    a[2 * PAGE + 7] = 0xc1;
    tgt_wait_verify(NULL);
    /* the root wrote 0x5a at offset 5 once verification began */
    for (int i = 0; i < 500 && a[5] != 0x5a; i++) tgt_sleep_ms(10);
    CHECK_EQ("child sees the root's write", a[5], 0x5a);
    CHECK_EQ("child's own byte", a[2 * PAGE + 7], 0xc1);
    CHECK(tgt_check_fill(a + 3 * PAGE, 100, 0xa0) < 0, "child: tail of A changed");
    a[A_SIZE - 1] = 0xc2;
    tgt_publish_part();
    tgt_idle();
}

static void outsider(int argc, char **argv) {
    if (argc < 5) tgt_die("usage: outsider KEY_BASE shm|sem");
    key_t base = (key_t)strtol(argv[3], NULL, 0);
    if (!strcmp(argv[4], "shm")) {
        int id = SYS(shmget(base + 1, 0, 0));
        SYSP(shmat(id, NULL, SHM_RDONLY));
    } else {
        int id = SYS(semget(base + 4, 0, 0));
        struct sembuf op = {.sem_num = 2, .sem_op = 0, .sem_flg = IPC_NOWAIT};
        op.sem_op = 1;
        SYS(semop(id, &op, 1));
        op.sem_op = -1;
        SYS(semop(id, &op, 1));
    }
    tgt_ready(NULL);
    tgt_idle();
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    if (argc > 2 && !strcmp(argv[2], "outsider")) outsider(argc, argv);
    /* the namespace it was started in: restored, the tree is never there (nor is a restored
     * namespace told apart by its inode number, which the kernel reuses once the old one died) */
    unsigned long long started_in = ns_inode();
    if (argc > 2 && !strcmp(argv[2], "own")) SYS(unshare(CLONE_NEWIPC));
    unsigned long long ns = ns_inode();
    /* keys unique to this run, so parallel runs in the host namespace never meet */
    key_t base = (key_t)(0x7e000000 | ((getpid() & 0xfffff) << 4));
    shm_a = SYS(shmget(base + 1, A_SIZE, IPC_CREAT | IPC_EXCL | 0640));
    a = SYSP(shmat(shm_a, NULL, 0));
    tgt_fill(a, 3 * PAGE, 0xa1);
    tgt_fill(a + 3 * PAGE, 100, 0xa0);
    shm_b = SYS(shmget(IPC_PRIVATE, B_SIZE, IPC_CREAT | 0600));
    unsigned char *bw = SYSP(shmat(shm_b, NULL, 0));
    tgt_fill(bw, B_SIZE, 0xb1);
    SYS(shmdt(bw));
    b = SYSP(shmat(shm_b, NULL, SHM_RDONLY));
    shm_c = SYS(shmget(base + 3, C_SIZE, IPC_CREAT | IPC_EXCL | 0600));
    unsigned char *c = SYSP(shmat(shm_c, NULL, 0));
    tgt_fill(c, C_SIZE, 0xc3);
    SYS(shmdt(c));
    sem_id = SYS(semget(base + 4, 3, IPC_CREAT | IPC_EXCL | 0600));
    unsigned short vals[3] = {1, 2, 2};
    SYS(semctl(sem_id, 0, SETALL, vals));
    struct sembuf up = {.sem_num = 2, .sem_op = 1};
    SYS(semop(sem_id, &up, 1));
    msq = SYS(msgget(base + 5, IPC_CREAT | IPC_EXCL | 0600));
    struct msg m1 = {.mtype = 7}, m2 = {.mtype = 9};
    strcpy(m1.text, "first message");
    strcpy(m2.text, "second, longer message");
    SYS(msgsnd(msq, &m1, strlen(m1.text), 0));
    SYS(msgsnd(msq, &m2, strlen(m2.text), 0));

    pid_t child = SYS(fork());
    if (child == 0) child_main();
    /* the child's mprotect and write are done before the tree is reported ready */
    for (int i = 0; i < 500 && a[2 * PAGE + 7] != 0xc1; i++) tgt_sleep_ms(10);

    char extra[256];
    snprintf(extra, sizeof extra, "ns=%llu\nkey_base=%d\nchild=%d\nshm=%d %d %d\nsem=%d\nmsg=%d\n", ns, (int)base, (int)child,
             shm_a, shm_b, shm_c, sem_id, msq);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    char expect[32] = {0};
    tgt_read_ctl("expect", expect, sizeof expect);
    int restored = !strncmp(expect, "restored", 8);
    CHECK(restored || !strncmp(expect, "live", 4), "CTL/expect says '%s'", expect);
    if (restored)
        CHECK(ns_inode() != started_in, "restored in the IPC namespace it was started in");
    else
        CHECK_EQ("IPC namespace", ns_inode(), ns);

    check_segment("segment A", base + 1, shm_a, A_SIZE, 0640);
    check_segment("segment B", IPC_PRIVATE, shm_b, B_SIZE, 0600);
    check_segment("segment C", base + 3, shm_c, C_SIZE, 0600);
    CHECK(tgt_check_fill(a, 2 * PAGE + 7, 0xa1) < 0, "segment A changed (first bytes)");
    CHECK_EQ("A: the child's byte", a[2 * PAGE + 7], 0xc1);
    CHECK(tgt_check_fill(a + 3 * PAGE, 100, 0xa0) < 0, "segment A's tail changed");
    a[5] = 0x5a;
    CHECK(tgt_check_fill(b, B_SIZE, 0xb1) < 0, "segment B changed");
    char perms[5];
    perms_at(b, perms);
    CHECK(!strcmp(perms, "r--s"), "segment B mapped %s, want r--s", perms);
    unsigned char *cc = shmat(shm_c, NULL, SHM_RDONLY);
    CHECK(cc != (void *)-1 && tgt_check_fill(cc, C_SIZE, 0xc3) < 0, "segment C: %s", cc == (void *)-1 ? strerror(errno) : "contents changed");
    if (cc != (void *)-1) shmdt(cc);
    struct shmid_ds ds;
    /* the root's one VMA and the child's three */
    if (shmctl(shm_a, IPC_STAT, &ds) == 0) CHECK_EQ("segment A nattch", ds.shm_nattch, 4);

    CHECK_EQ("semaphore set id", semget(base + 4, 0, 0), sem_id);
    unsigned short now[3] = {0};
    VSYS(semctl(sem_id, 0, GETALL, now));
    CHECK(now[0] == 1 && now[1] == 2 && now[2] == 3, "semaphores %u %u %u, want 1 2 3", now[0], now[1], now[2]);
    struct sembuf down = {.sem_num = 2, .sem_op = -3, .sem_flg = IPC_NOWAIT};
    CHECK(semop(sem_id, &down, 1) == 0, "semop -3 on the third semaphore: %s", strerror(errno));

    CHECK_EQ("message queue id", msgget(base + 5, 0), msq);
    struct msg got = {0};
    ssize_t n = msgrcv(msq, &got, sizeof got.text, 0, IPC_NOWAIT);
    CHECK(n == (ssize_t)strlen(m1.text) && got.mtype == 7 && !memcmp(got.text, m1.text, (size_t)n), "first message: %zd bytes type %ld", n, got.mtype);
    memset(&got, 0, sizeof got);
    n = msgrcv(msq, &got, sizeof got.text, 0, IPC_NOWAIT);
    CHECK(n == (ssize_t)strlen(m2.text) && got.mtype == 9 && !memcmp(got.text, m2.text, (size_t)n), "second message: %zd bytes type %ld", n, got.mtype);
    CHECK(msgrcv(msq, &got, sizeof got.text, 0, IPC_NOWAIT) < 0 && errno == ENOMSG, "a third message");

    const char *roles[] = {"child"};
    tgt_collect_parts(roles, 1, 10000);
    CHECK_EQ("A: the child's last byte", a[A_SIZE - 1], 0xc2);
    tgt_publish_result();
    tgt_idle();
}
