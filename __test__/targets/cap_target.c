// Seize/inspect test target. Every task bumps its own counter in a shared report file so the test
// can tell running from stopped, and the target writes what it knows about itself (function and
// stack addresses, fs_base, signal mask, fd flags and offsets) for cross-checks.
//
//   cap_target REPORT single            one thread
//   cap_target REPORT threads N         leader + N-1 threads
//   cap_target REPORT forktree N        N processes in a binary tree
//   cap_target REPORT spawner           main thread creates short-lived threads without pause
//   cap_target REPORT zombie            one child that exited with status 7, never reaped
//   cap_target REPORT selfreport        spins in spin_here(); fds of many kinds; pending signals
//   cap_target REPORT killparent        a child whose vfork child SIGKILLs the root mid-seize
//   cap_target REPORT sleepers          threads blocked in pause(), nanosleep() and read()
//   cap_target REPORT seccomp           two seccomp filters installed (the second with FLAG_LOG)
//   cap_target REPORT traced            a child this process keeps under its own ptrace
// Layout of REPORT (little-endian): u64 counters[256]; at 2048: u64 ready, spin_addr, stack_addr,
// fs_base, blocked, aux_pid; at 2112: 16 x { i32 fd; i32 flags; i64 pos }.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct fdrep {
  int32_t fd, flags;
  int64_t pos;
};

struct report {
  volatile uint64_t counters[256];
  volatile uint64_t ready, spin_addr, stack_addr, fs_base, blocked, aux_pid;
  uint64_t pad[2];
  struct fdrep fds[16];
};

static struct report *rep;

static void die(const char *what) {
  perror(what);
  exit(99);
}

__attribute__((noreturn)) static void tick_forever(int idx) {
  for (;;) {
    rep->counters[idx]++;
    usleep(2000);
  }
}

static void *thread_main(void *arg) {
  tick_forever((int)(intptr_t)arg);
  return NULL;
}

static void start_threads(int n) {
  for (int i = 1; i < n; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, (void *)(intptr_t)i)) die("pthread_create");
  }
}

static void forktree(int n) {
  int idx = 0;
again:
  for (int c = 2 * idx + 1; c <= 2 * idx + 2 && c < n; c++) {
    pid_t p = fork();
    if (p < 0) die("fork");
    if (p == 0) {
      idx = c;
      goto again;
    }
  }
  __atomic_add_fetch(&rep->ready, 1, __ATOMIC_SEQ_CST);
  tick_forever(idx);
}

static void *short_thread(void *arg) {
  (void)arg;
  __atomic_add_fetch(&rep->counters[1], 1, __ATOMIC_SEQ_CST);
  return NULL;
}

static void *long_thread(void *arg) {
  (void)arg;
  for (;;) pause();
  return NULL;
}

__attribute__((noinline)) void spin_here(void) {
  volatile uint64_t local = 0;
  rep->stack_addr = (uint64_t)(uintptr_t)&local;
  __atomic_store_n(&rep->ready, 1, __ATOMIC_SEQ_CST);
  for (;;) {
    local++;
    rep->counters[0] = local;
  }
}

static void add_fd(int slot, int fd) {
  rep->fds[slot].fd = fd;
  rep->fds[slot].flags = fcntl(fd, F_GETFL);
  rep->fds[slot].pos = lseek(fd, 0, SEEK_CUR);
}

static void selfreport(const char *report_path) {
  char path[4096];
  snprintf(path, sizeof path, "%s.data", report_path);
  int f1 = open(path, O_CREAT | O_RDWR | O_APPEND, 0600);
  if (f1 < 0 || write(f1, "hello", 5) != 5) die("data file");
  int f2 = open(path, O_RDONLY);
  if (f2 < 0 || lseek(f2, 3, SEEK_SET) != 3) die("data file ro");
  int p[2];
  if (pipe2(p, O_NONBLOCK)) die("pipe");
  int ev = eventfd(42, EFD_NONBLOCK);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ee = {.events = EPOLLIN, .data.u64 = 0x1122334455ULL};
  if (ev < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ev, &ee)) die("eventfd/epoll");
  sigset_t sfdmask;
  sigemptyset(&sfdmask);
  sigaddset(&sfdmask, SIGUSR1);
  sigaddset(&sfdmask, SIGHUP);
  int sfd = signalfd(-1, &sfdmask, SFD_NONBLOCK);
  int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
  struct itimerspec its = {.it_value = {100, 0}, .it_interval = {5, 250}};
  if (sfd < 0 || tfd < 0 || timerfd_settime(tfd, 0, &its, NULL)) die("signalfd/timerfd");
  int in = inotify_init1(0);
  if (in < 0 || inotify_add_watch(in, "/tmp", IN_CREATE | IN_DELETE) < 0) die("inotify");
  int fds[] = {f1, f2, p[0], p[1], ev, ep, sfd, tfd, in};
  for (unsigned i = 0; i < sizeof fds / sizeof fds[0]; i++) add_fd((int)i, fds[i]);

  // SIGUSR2 blocked and queued process-wide by the test; SIGUSR1 queued to this thread now.
  sigset_t blk;
  sigemptyset(&blk);
  sigaddset(&blk, SIGUSR1);
  sigaddset(&blk, SIGUSR2);
  if (sigprocmask(SIG_BLOCK, &blk, NULL)) die("sigprocmask");
  union sigval sv = {.sival_int = 1234};
  if (pthread_sigqueue(pthread_self(), SIGUSR1, sv)) die("pthread_sigqueue");
  uint64_t cur = 0;
  sigset_t now;
  sigprocmask(SIG_BLOCK, NULL, &now);
  for (int s = 1; s <= 64; s++)
    if (sigismember(&now, s)) cur |= 1ULL << (s - 1);
  rep->blocked = cur;
  rep->spin_addr = (uint64_t)(uintptr_t)&spin_here;
  rep->fs_base = (uint64_t)(uintptr_t)pthread_self();
  prctl(PR_SET_NAME, "cap-self", 0, 0, 0);
  spin_here();
}

// Runs in a vfork child of `parent`: while the parent's leader waits for us (unstoppable by
// PTRACE_INTERRUPT), watch for a tracer on it and then kill `root`, mid-seize by construction.
static char status_path[64], status_buf[4096];
static void vfork_watch(pid_t parent, pid_t root) {
  snprintf(status_path, sizeof status_path, "/proc/%d/status", (int)parent);
  rep->ready = 1;
  for (;;) {
    int fd = open(status_path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, status_buf, sizeof status_buf - 1) : -1;
    if (fd >= 0) close(fd);
    if (n > 0) {
      status_buf[n] = 0;
      char *t = strstr(status_buf, "TracerPid:");
      if (t && atoi(t + 10) != 0) {
        kill(root, SIGKILL);
        _exit(0);
      }
    }
    usleep(200);
  }
}

static int sleeper_pipe[2];
static void *in_pause(void *arg) {
  (void)arg;
  prctl(PR_SET_NAME, "in-pause", 0, 0, 0);
  for (;;) pause();
  return NULL;
}
static void *in_nanosleep(void *arg) {
  (void)arg;
  prctl(PR_SET_NAME, "in-nanosleep", 0, 0, 0);
  for (;;) {
    struct timespec ts = {1000, 0};
    nanosleep(&ts, NULL);
  }
  return NULL;
}
static void *in_read(void *arg) {
  (void)arg;
  char c;
  prctl(PR_SET_NAME, "in-read", 0, 0, 0);
  for (;;)
    if (read(sleeper_pipe[0], &c, 1) < 0 && errno != EINTR) die("read");
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s REPORT MODE [N]\n", argv[0]);
    return 2;
  }
  int fd = open(argv[1], O_CREAT | O_RDWR | O_TRUNC, 0600);
  if (fd < 0 || ftruncate(fd, 4096)) die("report");
  rep = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (rep == MAP_FAILED) die("mmap");
  close(fd);
  const char *mode = argv[2];
  int n = argc > 3 ? atoi(argv[3]) : 1;

  if (!strcmp(mode, "single")) {
    rep->ready = 1;
    tick_forever(0);
  } else if (!strcmp(mode, "threads")) {
    start_threads(n);
    rep->ready = 1;
    tick_forever(0);
  } else if (!strcmp(mode, "forktree")) {
    forktree(n);
  } else if (!strcmp(mode, "spawner")) {
    pthread_t t;
    for (int i = 0; i < 3; i++)
      if (pthread_create(&t, NULL, long_thread, NULL)) die("pthread_create");
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    rep->ready = 1;
    for (;;) {
      if (pthread_create(&t, &at, short_thread, NULL) == 0) rep->counters[0]++;
    }
  } else if (!strcmp(mode, "zombie")) {
    pid_t z = fork();
    if (z == 0) _exit(7);
    rep->aux_pid = (uint64_t)z;
    // Wait until the child is a zombie before declaring readiness.
    siginfo_t si;
    if (waitid(P_PID, z, &si, WEXITED | WNOWAIT)) die("waitid");
    rep->ready = 1;
    tick_forever(0);
  } else if (!strcmp(mode, "selfreport")) {
    selfreport(argv[1]);
  } else if (!strcmp(mode, "killparent")) {
    pid_t root = getpid();
    pid_t c = fork();
    if (c == 0) {
      pid_t me = getpid();
      // published by the child before its vfork child sets ready: the parent's own store after
      // fork() could come after the test has read the report
      rep->aux_pid = (uint64_t)me;
      if (vfork() == 0) vfork_watch(me, root);
      tick_forever(1);
    }
    if (c < 0) die("fork");
    tick_forever(0);
  } else if (!strcmp(mode, "sleepers")) {
    pthread_t t;
    if (pipe(sleeper_pipe)) die("pipe");
    void *(*fns[])(void *) = {in_pause, in_nanosleep, in_read};
    for (int i = 0; i < 3; i++)
      if (pthread_create(&t, NULL, fns[i], NULL)) die("pthread_create");
    rep->ready = 1;
    tick_forever(0);
  } else if (!strcmp(mode, "seccomp")) {
    // Two filters: allow-all, then one that also allows everything but with a different k.
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_filter allow2[] = {BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog p1 = {1, allow}, p2 = {2, allow2};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) die("no_new_privs");
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &p1)) die("seccomp 1");
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_LOG, &p2)) die("seccomp 2");
    rep->ready = 1;
    tick_forever(0);
  } else if (!strcmp(mode, "traced")) {
    pid_t c = fork();
    if (c == 0) tick_forever(1);
    if (ptrace(PTRACE_SEIZE, c, 0, 0)) die("PTRACE_SEIZE");
    rep->aux_pid = (uint64_t)c;
    rep->ready = 1;
    tick_forever(0);
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  return 0;
}
