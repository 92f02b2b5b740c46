/*
 * Pipes holding unread data:
 *   A  parent -> child, 40 000 bytes queued        B  child -> parent, 3 000 bytes queued
 *   C  both ends in the parent, 5 000 bytes queued, write end O_NONBLOCK, read end dup'd to fd 100
 *   D  both ends in the parent, resized to 256 KiB with 200 000 bytes queued
 *   E  read end only (writer closed), 1 000 bytes queued then EOF
 *   F  both ends in the parent, empty, read end O_NONBLOCK
 * Verification: each reader gets exactly its bytes in order and then nothing more (EAGAIN, or EOF
 * for E), pipe sizes and O_NONBLOCK flags kept, C's dup shares the same pipe, and data written
 * after restore flows through A, C and F.
 */
#include "common.h"
#include <sys/wait.h>

#define A_LEN 40000
#define B_LEN 3000
#define C_LEN 5000
#define D_LEN 200000
#define D_SIZE (256 * 1024)
#define E_LEN 1000

static uint8_t buf[D_SIZE];

/* Reads exactly len bytes (blocking with a deadline via O_NONBLOCK polling) and checks them. */
static void expect_bytes(const char *what, int fd, size_t len, uint32_t seed) {
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    size_t got = 0;
    long long deadline = tgt_now_ms() + 2000;
    while (got < len && tgt_now_ms() < deadline) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0)
            break;
        else if (errno == EAGAIN)
            tgt_sleep_ms(1);
        else {
            FAIL("%s: read: %s", what, strerror(errno));
            break;
        }
    }
    CHECK_EQ(what, got, len);
    long off = tgt_check_fill(buf, got, seed);
    if (off >= 0) FAIL("%s: byte %ld differs", what, off);
    fcntl(fd, F_SETFL, fl);
}

/* Nothing more queued: a non-blocking read gives EAGAIN (or 0 when eof is expected). */
static void expect_drained(const char *what, int fd, int eof) {
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    char c;
    ssize_t r = read(fd, &c, 1);
    if (eof)
        CHECK(r == 0, "%s: expected EOF, read -> %zd (%s)", what, r, r < 0 ? strerror(errno) : "data");
    else
        CHECK(r < 0 && errno == EAGAIN, "%s: expected no more data, read -> %zd", what, r);
    fcntl(fd, F_SETFL, fl);
}

static void write_all(int fd, const void *p, size_t len) {
    const uint8_t *b = p;
    while (len) {
        ssize_t w = write(fd, b, len);
        if (w < 0) tgt_die("write %zu bytes to fd %d", len, fd);
        b += w;
        len -= (size_t)w;
    }
}

static void round_trip(const char *what, int wfd, int rfd) {
    char msg[] = "after-restore", in[sizeof msg] = {0};
    CHECK(write(wfd, msg, sizeof msg) == (ssize_t)sizeof msg, "%s: write after restore: %s", what,
          strerror(errno));
    int fl = fcntl(rfd, F_GETFL);
    fcntl(rfd, F_SETFL, fl & ~O_NONBLOCK);
    CHECK(read(rfd, in, sizeof in) == (ssize_t)sizeof in && !memcmp(in, msg, sizeof msg),
          "%s: data written after restore did not come back", what);
    fcntl(rfd, F_SETFL, fl);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    int a[2], b[2], c[2], d[2], e[2], f[2], up[2];
    SYS(pipe(a));
    SYS(pipe(b));
    SYS(pipe(up));
    pid_t child = SYS(fork());
    if (child == 0) {
        tgt_role = "child";
        close(a[1]);
        close(b[0]);
        close(up[0]);
        uint8_t *out = SYSP(malloc(B_LEN));
        tgt_fill(out, B_LEN, 21);
        write_all(b[1], out, B_LEN);
        free(out);
        write_all(up[1], "k", 1);
        close(up[1]);
        tgt_wait_verify(NULL);
        expect_bytes("A (parent->child)", a[0], A_LEN, 20);
        expect_drained("A", a[0], 0);
        tgt_publish("a-drained", "1\n"); /* now the parent may send more through A */
        /* The parent sends one more message through A after verifying; echo it through B. */
        char msg[32] = {0};
        ssize_t r = read(a[0], msg, sizeof msg - 1);
        CHECK(r > 0 && !strcmp(msg, "after-restore"), "A: no message after restore (%zd)", r);
        if (r > 0) write_all(b[1], msg, (size_t)r);
        tgt_publish_part();
        tgt_idle();
    }
    close(a[0]);
    close(b[1]);
    close(up[1]);
    char k;
    if (read(up[0], &k, 1) != 1) tgt_die("child setup");
    close(up[0]);

    uint8_t *tmp = SYSP(malloc(D_LEN));
    tgt_fill(tmp, A_LEN, 20);
    write_all(a[1], tmp, A_LEN);

    SYS(pipe(c));
    tgt_fill(tmp, C_LEN, 22);
    write_all(c[1], tmp, C_LEN);
    SYS(fcntl(c[1], F_SETFL, O_NONBLOCK));
    SYS(dup2(c[0], 100));

    SYS(pipe(d));
    SYS(fcntl(d[1], F_SETPIPE_SZ, D_SIZE));
    tgt_fill(tmp, D_LEN, 23);
    write_all(d[1], tmp, D_LEN);

    SYS(pipe(e));
    tgt_fill(tmp, E_LEN, 24);
    write_all(e[1], tmp, E_LEN);
    close(e[1]);

    SYS(pipe2(f, 0));
    SYS(fcntl(f[0], F_SETFL, O_NONBLOCK));
    free(tmp);

    char extra[128];
    snprintf(extra, sizeof extra, "child=%d\n", child);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    /* Flags and sizes first: reading below toggles O_NONBLOCK temporarily. */
    CHECK(fcntl(c[1], F_GETFL) & O_NONBLOCK, "C write end lost O_NONBLOCK");
    CHECK(!(fcntl(c[0], F_GETFL) & O_NONBLOCK), "C read end gained O_NONBLOCK");
    CHECK(fcntl(f[0], F_GETFL) & O_NONBLOCK, "F read end lost O_NONBLOCK");
    CHECK(!(fcntl(a[1], F_GETFL) & O_NONBLOCK), "A write end gained O_NONBLOCK");
    CHECK_EQ("D pipe size", fcntl(d[0], F_GETPIPE_SZ), D_SIZE);
    /* the default: 16 pages */
    CHECK_EQ("C pipe size", fcntl(c[0], F_GETPIPE_SZ), 16 * sysconf(_SC_PAGESIZE));
    struct stat s1, s2;
    if (fstat(c[0], &s1) == 0 && fstat(100, &s2) == 0)
        CHECK(s1.st_ino == s2.st_ino && S_ISFIFO(s2.st_mode), "fd 100 is not a dup of C's read end");
    else
        FAIL("fstat C: %s", strerror(errno));
    CHECK_EQ("fd 100 FD_CLOEXEC", fcntl(100, F_GETFD), 0);

    expect_bytes("B (child->parent)", b[0], B_LEN, 21);
    expect_drained("B", b[0], 0);
    expect_bytes("C (in-process)", 100, C_LEN, 22); /* through the dup */
    expect_drained("C", c[0], 0);
    expect_bytes("D (256 KiB pipe)", d[0], D_LEN, 23);
    expect_drained("D", d[0], 0);
    expect_bytes("E (writer closed)", e[0], E_LEN, 24);
    expect_drained("E", e[0], 1);
    expect_drained("F", f[0], 0);
    round_trip("C", c[1], c[0]);
    round_trip("F", f[1], f[0]);

    /* A: the child checks the queued bytes, then echoes our message back through B. */
    long long deadline = tgt_now_ms() + 2000;
    while (!tgt_ctl_exists("a-drained") && tgt_now_ms() < deadline) tgt_sleep_ms(1);
    write_all(a[1], "after-restore", 13);
    char echo[32] = {0};
    int fl = fcntl(b[0], F_GETFL);
    fcntl(b[0], F_SETFL, fl | O_NONBLOCK);
    deadline = tgt_now_ms() + 2000;
    ssize_t r = -1;
    while (tgt_now_ms() < deadline && (r = read(b[0], echo, sizeof echo - 1)) < 0 && errno == EAGAIN)
        tgt_sleep_ms(1);
    CHECK(r == 13 && !strcmp(echo, "after-restore"), "no echo from the child through A/B (%zd)", r);
    int st;
    CHECK(waitpid(child, &st, WNOHANG) == 0, "child %d is gone", child);

    static const char *const roles[] = {"child"};
    tgt_collect_parts(roles, 1, 3000);
    tgt_publish_result();
    tgt_idle();
}
