/*
 * Zombie children: one exited with status 42, one killed by SIGTERM, both left unreaped (SIGCHLD
 * at its default, so the kernel keeps them), next to a live child. Verification: each zombie is
 * still our child with its pid and state Z, and waitpid() on it gives exactly its status; the
 * live child is still alive and ours.
 */
#include "common.h"
#include <sys/wait.h>

static char proc_state(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' ? close_paren[2] : '?';
}

static void wait_zombie(pid_t pid) {
    long long deadline = tgt_now_ms() + 3000;
    while (proc_state(pid) != 'Z')
        if (tgt_now_ms() > deadline) tgt_die("child %d never became a zombie", pid);
        else tgt_sleep_ms(1);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    signal(SIGCHLD, SIG_DFL);
    pid_t exited = SYS(fork());
    if (exited == 0) _exit(42);
    pid_t killed = SYS(fork());
    if (killed == 0) {
        for (;;) pause();
    }
    pid_t live = SYS(fork());
    if (live == 0) {
        tgt_role = "live";
        tgt_idle();
    }
    kill(killed, SIGTERM);
    wait_zombie(exited);
    wait_zombie(killed);

    char extra[128];
    snprintf(extra, sizeof extra, "exited=%d\nkilled=%d\nlive=%d\n", exited, killed, live);
    tgt_ready(extra);
    tgt_wait_verify(NULL);

    CHECK(proc_state(exited) == 'Z', "pid %d state %c, want Z", exited, proc_state(exited));
    CHECK(proc_state(killed) == 'Z', "pid %d state %c, want Z", killed, proc_state(killed));
    CHECK(proc_state(live) == 'S', "live child %d state %c", live, proc_state(live));
    int st = 0;
    pid_t r = waitpid(exited, &st, WNOHANG);
    CHECK(r == exited && WIFEXITED(st) && WEXITSTATUS(st) == 42,
          "waitpid(%d) -> %d status 0x%x, want exit 42", exited, r, st);
    st = 0;
    r = waitpid(killed, &st, WNOHANG);
    CHECK(r == killed && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM && !WCOREDUMP(st),
          "waitpid(%d) -> %d status 0x%x, want killed by SIGTERM", killed, r, st);
    r = waitpid(live, &st, WNOHANG);
    CHECK(r == 0, "live child %d: waitpid -> %d", live, r);
    r = waitpid(-1, &st, WNOHANG);
    CHECK(r == 0, "an unexpected child was reaped: %d", r);
    tgt_publish_result();
    tgt_idle();
}
