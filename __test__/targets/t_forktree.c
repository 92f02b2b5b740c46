/*
 * A process tree spanning process groups and sessions:
 *   root (session leader, its own group)
 *   +- same     stays in root's group
 *   |  +- same.kid   a grandchild in root's group
 *   +- group    setpgid(0,0): leader of a new group in root's session
 *   |  +- group.kid  born into group's process group
 *   +- session  setsid(): leader of a new session and group
 *      +- session.kid  in session's session, setpgid(0,0): its own group there
 * Every process checks after restore that its pid, ppid, pgid and sid are what they were; each
 * parent also checks its child is still its child (waitpid WNOHANG = 0). Children report through
 * CTL/part.ROLE files that the root folds into the verdict.
 */
#include "common.h"
#include <sys/wait.h>

struct ids { pid_t pid, ppid, pgid, sid; };

static struct ids me;
static pid_t my_child = -1;
static int up_pipe[2];

static struct ids current(void) {
    struct ids c = {getpid(), getppid(), getpgid(0), getsid(0)};
    return c;
}

static void check_self(void) {
    struct ids c = current();
    CHECK_EQ("pid", c.pid, me.pid);
    /* The root's parent is whoever restored it (then the test's subreaper): not part of the tree. */
    if (strcmp(tgt_role, "main") != 0) CHECK_EQ("ppid", c.ppid, me.ppid);
    CHECK_EQ("pgid", c.pgid, me.pgid);
    CHECK_EQ("sid", c.sid, me.sid);
    if (my_child > 0) {
        int st;
        pid_t r = waitpid(my_child, &st, WNOHANG);
        CHECK(r == 0, "child %d is not a live child of ours (waitpid -> %d, %s)", my_child, r,
              r < 0 ? strerror(errno) : "exited");
    }
}

/* Runs a role in a child: fn adjusts groups/sessions (and may fork a kid), then waits for verify. */
static pid_t spawn(const char *role, void (*fn)(void)) {
    pid_t pid = SYS(fork());
    if (pid) return pid;
    tgt_role = role;
    my_child = -1;
    fn();
    me = current();
    char one = 1;
    if (write(up_pipe[1], &one, 1) != 1) tgt_die("report up");
    close(up_pipe[0]);
    close(up_pipe[1]);
    tgt_wait_verify(NULL);
    check_self();
    tgt_publish_part();
    tgt_idle();
}

static void role_plain(void) {}
static void role_same(void) { my_child = spawn("same.kid", role_plain); }
static void role_group(void) {
    SYS(setpgid(0, 0));
    my_child = spawn("group.kid", role_plain); /* inherits our new group */
}
static void role_session_kid(void) { SYS(setpgid(0, 0)); }
static void role_session(void) {
    SYS(setsid());
    my_child = spawn("session.kid", role_session_kid);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    SYS(pipe(up_pipe));
    pid_t same = spawn("same", role_same);
    pid_t group = spawn("group", role_group);
    pid_t session = spawn("session", role_session);
    close(up_pipe[1]);
    char buf[8];
    int got = 0;
    while (got < 6) {
        ssize_t r = read(up_pipe[0], buf, sizeof buf);
        if (r <= 0) tgt_die("a child failed during setup (read %zd)", r);
        got += (int)r;
    }
    close(up_pipe[0]);
    me = current();
    char extra[256];
    snprintf(extra, sizeof extra, "same=%d\ngroup=%d\nsession=%d\n", same, group, session);
    tgt_ready(extra);
    tgt_wait_verify(NULL);
    check_self();
    const pid_t kids[] = {same, group, session};
    for (int i = 0; i < 3; i++) {
        int st;
        pid_t r = waitpid(kids[i], &st, WNOHANG);
        CHECK(r == 0, "child %d is not a live child of root (waitpid -> %d)", kids[i], r);
    }
    CHECK_EQ("root sid is root", getsid(0), getpid());
    CHECK_EQ("group's pgid", getpgid(group), group);
    CHECK_EQ("same's pgid", getpgid(same), getpid());
    CHECK_EQ("session's sid", getsid(session), session);
    static const char *const roles[] = {"same", "same.kid", "group", "group.kid", "session",
                                        "session.kid"};
    tgt_collect_parts(roles, 6, 3000);
    tgt_publish_result();
    tgt_idle();
}
