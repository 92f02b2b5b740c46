/*
 * Shared protocol for the checkpoint test targets (see __test__/helpers/target.ts).
 *
 * A target is started as `t_NAME CTL` with stdin=/dev/null, stdout/stderr appended to CTL/log,
 * in its own session. It sets up one kind of state, publishes CTL/ready ("key=value" lines, the
 * first being pid=PID), then idles until CTL/verify appears (polled with stat(): the target holds
 * no descriptor for the protocol, so the dumped fd table is exactly the state under test). After
 * a dump and restore the test creates CTL/verify; the target checks its own state and publishes
 * CTL/result: "PASS" or "FAIL: reason[; reason...]". Every file is published by writing a
 * temporary file and renaming it, so the reader never sees half a file.
 *
 * Setup failures publish "FAIL: setup: ..." as the result and exit, so the harness reports the
 * cause instead of timing out on CTL/ready.
 */
#ifndef TSDUMP_TARGET_COMMON_H
#define TSDUMP_TARGET_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Every helper is optional for a given target; unused ones must not trip -Werror. */
#define TGT_API static __attribute__((unused))

/* The control directory, as an absolute path so a target may chdir() freely. */
static char tgt_ctl[PATH_MAX];
/* Accumulated check failures; the first ones are the most useful, later ones are dropped. */
static char tgt_failures[3072];
static int tgt_nfailures;
/* Name used in log lines and part files: "main" or a child's role. */
static const char *tgt_role = "main";

TGT_API inline pid_t tgt_gettid(void) { return (pid_t)syscall(SYS_gettid); }

TGT_API void tgt_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
TGT_API void tgt_log(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    /* One write() per line: the log is shared by every process of a tree (O_APPEND). */
    char out[1200];
    int m = snprintf(out, sizeof out, "[%s %d] %.*s", tgt_role, (int)getpid(), n, line);
    if (m > 0) {
        ssize_t w = write(2, out, (size_t)(m < (int)sizeof out ? m : (int)sizeof out - 1));
        (void)w;
    }
}

/* Writes CTL/NAME atomically (temporary file + rename). Returns 0 or -errno. */
TGT_API int tgt_publish(const char *name, const char *text) {
    char path[PATH_MAX + 160], tmp[PATH_MAX + 200];
    snprintf(path, sizeof path, "%s/%s", tgt_ctl, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.%d.tmp", tgt_ctl, name, (int)tgt_gettid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -errno;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return -e;
        }
        off += (size_t)w;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return -e;
    }
    return 0;
}

/* Reads CTL/NAME into buf (NUL-terminated). Returns bytes read or -errno. */
TGT_API ssize_t tgt_read_ctl(const char *name, char *buf, size_t size) {
    char path[PATH_MAX + 160];
    snprintf(path, sizeof path, "%s/%s", tgt_ctl, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = read(fd, buf, size - 1);
    int e = errno;
    close(fd);
    if (n < 0) return -e;
    buf[n] = 0;
    return n;
}

TGT_API int tgt_ctl_exists(const char *name) {
    char path[PATH_MAX + 160];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", tgt_ctl, name);
    return stat(path, &st) == 0;
}

/* Sleeps ms milliseconds, resuming after signal handlers. */
TGT_API void tgt_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

TGT_API long long tgt_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Setup failed: publish the reason as the result (so the harness can show it) and exit. */
TGT_API void tgt_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
TGT_API void tgt_die(const char *fmt, ...) {
    char msg[1024], text[1200];
    int e = errno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(text, sizeof text, "FAIL: setup (%s): %s (errno %d %s)\n", tgt_role, msg, e,
             strerror(e));
    tgt_log("%s", text);
    tgt_publish("result", text);
    _exit(1);
}

/* Setup step that must succeed: on -1 (or NULL via SYSP) the target gives up with the errno. */
#define SYS(expr)                                                                              \
    ({                                                                                         \
        __typeof__(expr) sys_r_ = (expr);                                                      \
        if (sys_r_ == (__typeof__(expr))-1) tgt_die("%s:%d: %s", __FILE__, __LINE__, #expr); \
        sys_r_;                                                                                \
    })
#define SYSP(expr)                                                                 \
    ({                                                                             \
        __typeof__(expr) sys_p_ = (expr);                                          \
        if (!sys_p_) tgt_die("%s:%d: %s", __FILE__, __LINE__, #expr);              \
        sys_p_;                                                                    \
    })

/* Records one failed check; verification continues so one run reports every broken thing. */
TGT_API void tgt_fail(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
TGT_API void tgt_fail(int line, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tgt_log("check failed (line %d): %s", line, msg);
    size_t used = strlen(tgt_failures);
    if (used + 8 < sizeof tgt_failures)
        snprintf(tgt_failures + used, sizeof tgt_failures - used, "%s%s", tgt_nfailures ? "; " : "",
                 msg);
    tgt_nfailures++;
}

#define FAIL(...) tgt_fail(__LINE__, __VA_ARGS__)
#define CHECK(cond, ...)                 \
    do {                                 \
        if (!(cond)) FAIL(__VA_ARGS__);  \
    } while (0)
/* Integer equality with both values in the message. */
#define CHECK_EQ(what, got, want)                                                              \
    do {                                                                                       \
        long long g_ = (long long)(got), w_ = (long long)(want);                               \
        if (g_ != w_) FAIL("%s: got %lld (0x%llx), want %lld (0x%llx)", what, g_,              \
                           (unsigned long long)g_, w_, (unsigned long long)w_);                \
    } while (0)
/* A call that must succeed during verification; evaluates to its value. */
#define VSYS(expr)                                                                   \
    ({                                                                               \
        __typeof__(expr) v_r_ = (expr);                                              \
        if (v_r_ == (__typeof__(expr))-1) FAIL("%s: %s", #expr, strerror(errno));    \
        v_r_;                                                                        \
    })

/* The text a verification publishes: "PASS" or "FAIL: ..." (with a trailing newline). */
TGT_API void tgt_verdict(char *out, size_t size) {
    if (tgt_nfailures == 0)
        snprintf(out, size, "PASS\n");
    else
        snprintf(out, size, "FAIL: %s%s\n", tgt_failures,
                 strlen(tgt_failures) + 16 >= sizeof tgt_failures ? " ..." : "");
}

TGT_API void tgt_publish_result(void) {
    char text[sizeof tgt_failures + 32];
    tgt_verdict(text, sizeof text);
    tgt_log("result: %s", text);
    if (tgt_publish("result", text) != 0) tgt_log("cannot publish result: %s", strerror(errno));
}

/*
 * Child processes report through CTL/part.ROLE; the root collects them with tgt_collect_parts().
 */
TGT_API void tgt_publish_part(void) {
    char text[sizeof tgt_failures + 32], name[96];
    tgt_verdict(text, sizeof text);
    snprintf(name, sizeof name, "part.%s", tgt_role);
    tgt_log("part result: %s", text);
    tgt_publish(name, text);
}

/* Waits (up to timeout_ms) for CTL/part.ROLE of each role and folds failures into ours. */
TGT_API void tgt_collect_parts(const char *const *roles, int n, long timeout_ms) {
    long long deadline = tgt_now_ms() + timeout_ms;
    for (int i = 0; i < n; i++) {
        char name[96], buf[sizeof tgt_failures + 32];
        snprintf(name, sizeof name, "part.%s", roles[i]);
        ssize_t r;
        while ((r = tgt_read_ctl(name, buf, sizeof buf)) < 0 && tgt_now_ms() < deadline)
            tgt_sleep_ms(5);
        if (r < 0) {
            FAIL("%s: no report within %ld ms", roles[i], timeout_ms);
            continue;
        }
        buf[strcspn(buf, "\n")] = 0;
        if (strncmp(buf, "PASS", 4) != 0) FAIL("%s: %s", roles[i], buf);
    }
}

/* Parses the command line: exactly one argument, the control directory. */
TGT_API void tgt_init(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CTLDIR [args...]\n", argv[0]);
        exit(2);
    }
    if (!realpath(argv[1], tgt_ctl)) {
        fprintf(stderr, "%s: bad control directory %s: %s\n", argv[0], argv[1], strerror(errno));
        exit(2);
    }
    setvbuf(stdout, NULL, _IONBF, 0);
}

/*
 * Publishes CTL/ready: "pid=PID" then the caller's extra "key=value\n" lines (may be NULL).
 */
TGT_API void tgt_ready(const char *extra) {
    char text[4096];
    snprintf(text, sizeof text, "pid=%d\n%s", (int)getpid(), extra ? extra : "");
    if (tgt_publish("ready", text) != 0) tgt_die("publish ready");
    tgt_log("ready");
}

/*
 * Idles until CTL/verify exists, calling tick (if any) every ~10 ms. stat() only: no fd is held,
 * so the fd table at dump time is the one the target built.
 */
TGT_API void tgt_wait_verify(void (*tick)(void)) {
    for (;;) {
        if (tick) tick();
        if (tgt_ctl_exists("verify")) return;
        tgt_sleep_ms(10);
    }
}

/* After the verdict: stay alive (the harness kills the tree by PID). */
TGT_API void __attribute__((noreturn)) tgt_idle(void) {
    for (;;) tgt_sleep_ms(1000);
}

/* Deterministic byte pattern: distinct per (seed, offset), never all-zero over a page. */
TGT_API inline uint8_t tgt_pattern_byte(uint32_t seed, size_t off) {
    uint32_t x = (uint32_t)(off / 8) * 2654435761u ^ seed * 40503u;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    return (uint8_t)(x >> ((off % 4) * 8)) | (uint8_t)(off % 8 == 0);
}

TGT_API void tgt_fill(void *p, size_t len, uint32_t seed) {
    uint8_t *b = p;
    for (size_t i = 0; i < len; i++) b[i] = tgt_pattern_byte(seed, i);
}

/* Returns the offset of the first mismatch, or -1 if p holds the pattern. */
TGT_API long tgt_check_fill(const void *p, size_t len, uint32_t seed) {
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i] != tgt_pattern_byte(seed, i)) return (long)i;
    return -1;
}

/* Returns the offset of the first non-zero byte, or -1. */
TGT_API long tgt_check_zero(const void *p, size_t len) {
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i]) return (long)i;
    return -1;
}

#endif
