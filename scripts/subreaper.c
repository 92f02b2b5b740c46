/*
 * Runs a command as a child subreaper and reaps every orphan that lands on it.
 *
 * PID 1 on the test machines does not reap orphans, and `criu restore -d` leaves the restored
 * tree orphaned; without a reaper their zombies keep PIDs taken and later restores collide.
 * When the command exits, whatever it left behind is killed and reaped, and its leftover PIDs are
 * listed on stderr, so a leaking test is visible instead of silently poisoning the next run.
 *
 * usage: subreaper COMMAND [ARGS...]   exit status: the command's
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t child;

static void forward(int sig) {
    if (child > 0) kill(child, sig);
}

static int kill_leftovers(void) {
    /* Orphans reparented to us appear in our children list. */
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", getpid());
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    int count = 0;
    for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) {
        pid_t pid = atoi(tok);
        if (pid <= 0) continue;
        fprintf(stderr, "subreaper: killing leftover pid %d\n", pid);
        kill(pid, SIGKILL);
        count++;
    }
    return count;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s COMMAND [ARGS...]\n", argv[0]);
        return 2;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        perror("subreaper: PR_SET_CHILD_SUBREAPER");
        return 2;
    }
    child = fork();
    if (child < 0) {
        perror("subreaper: fork");
        return 2;
    }
    if (child == 0) {
        execvp(argv[1], argv + 1);
        fprintf(stderr, "subreaper: cannot run %s: %s\n", argv[1], strerror(errno));
        _exit(127);
    }
    signal(SIGINT, forward);
    signal(SIGTERM, forward);
    int status = 0, child_status = -1;
    for (;;) {
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            break; /* ECHILD: nothing left */
        }
        if (pid == child) {
            child_status = status;
            break;
        }
    }
    /* Orphans keep arriving while the command's own children die: sweep until none is left. */
    while (child_status >= 0) {
        kill_leftovers();
        usleep(20 * 1000);
        pid_t r;
        while ((r = waitpid(-1, &status, WNOHANG)) > 0) {
        }
        if (r < 0 && errno == ECHILD) break;
    }
    if (child_status < 0) return 2;
    if (WIFEXITED(child_status)) return WEXITSTATUS(child_status);
    return 128 + WTERMSIG(child_status);
}
