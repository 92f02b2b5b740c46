/*
 * The VMA flags a dump must carry (CRIU's vma_entry flags and madv): one anonymous private
 * region per flag, each 4 pages with patterned contents:
 *   mlock()ed (VM_LOCKED, "lo"), MAP_LOCKED, MAP_NORESERVE ("nr"), MAP_GROWSDOWN ("gd"),
 *   MADV_SEQUENTIAL ("sr"), MADV_RANDOM ("rr"), MADV_DONTFORK ("dc"), MADV_DONTDUMP ("dd"),
 *   MADV_MERGEABLE ("mg"), MADV_HUGEPAGE ("hg"), MADV_NOHUGEPAGE ("nh"), MADV_WIPEONFORK ("wf");
 * and a private file mapping that is mlock()ed.
 * Verification: each region still has its flag in /proc/self/smaps VmFlags (and no other of
 * these), its contents, and the behaviour the flag means: locked regions resident and counted
 * in VmLck, a forked child does not see the MADV_DONTFORK region and sees the MADV_WIPEONFORK
 * one zeroed.
 * With the argument "unlocked-forkable" the regions fork leaves out or the child does not inherit
 * the flag of (mlock: "lo", MADV_DONTFORK: "dc") and the mlock()ed file mapping are left out: a
 * dump --snapshot then reads every VmFlags from its holder (crates/core/src/mem/snapshot.rs).
 */
#include "common.h"
#include <setjmp.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PAGES 4
#define LEN (PAGES * 4096UL)

struct region {
    const char *what;
    const char *flag; /* VmFlags mnemonic */
    int mmap_flags;
    int advice; /* -1: none; -2: mlock() */
    char *addr;
};

static struct region regions[] = {
    {"mlock", "lo", 0, -2, NULL},
    {"MAP_LOCKED", "lo", MAP_LOCKED, -1, NULL},
    {"MAP_NORESERVE", "nr", MAP_NORESERVE, -1, NULL},
    {"MAP_GROWSDOWN", "gd", MAP_GROWSDOWN, -1, NULL},
    {"MADV_SEQUENTIAL", "sr", 0, MADV_SEQUENTIAL, NULL},
    {"MADV_RANDOM", "rr", 0, MADV_RANDOM, NULL},
    {"MADV_DONTFORK", "dc", 0, MADV_DONTFORK, NULL},
    {"MADV_DONTDUMP", "dd", 0, MADV_DONTDUMP, NULL},
    {"MADV_MERGEABLE", "mg", 0, MADV_MERGEABLE, NULL},
    {"MADV_HUGEPAGE", "hg", 0, MADV_HUGEPAGE, NULL},
    {"MADV_NOHUGEPAGE", "nh", 0, MADV_NOHUGEPAGE, NULL},
    {"MADV_WIPEONFORK", "wf", 0, MADV_WIPEONFORK, NULL},
};
#define NREGIONS ((int)(sizeof regions / sizeof regions[0]))
static const char *all_flags[] = {"lo", "nr", "gd", "sr", "rr", "dc", "dd", "mg", "hg", "nh", "wf"};

static char *file_map;
/* "unlocked-forkable": no lo or dc region, no file mapping (see the top) */
static int forkable_only;

static int skipped(const struct region *r) {
    return forkable_only && (!strcmp(r->flag, "lo") || !strcmp(r->flag, "dc"));
}

/* The VmFlags line of the VMA that starts at `addr` (into out), 0 if found. */
static int vmflags_of(const void *addr, char *out, size_t size) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    int in = 0, found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, ' ') == line + strcspn(line, " ")) {
            in = start == (unsigned long)addr;
            continue;
        }
        if (in && !strncmp(line, "VmFlags:", 8)) {
            snprintf(out, size, "%s", line + 8);
            out[strcspn(out, "\n")] = 0;
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static int has_flag(const char *flags, const char *f) {
    char pat[8];
    snprintf(pat, sizeof pat, " %s", f);
    const char *p = strstr(flags, pat);
    return p && (p[3] == ' ' || p[3] == 0);
}

static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, strlen(key))) v = atol(line + strlen(key));
    if (f) fclose(f);
    return v;
}

static int resident(const void *addr, size_t len) {
    unsigned char vec[PAGES];
    if (mincore((void *)addr, len, vec) != 0) return 0;
    for (size_t i = 0; i < len / 4096; i++)
        if (!(vec[i] & 1)) return 0;
    return 1;
}

static void check_region(const struct region *r) {
    char flags[256];
    if (vmflags_of(r->addr, flags, sizeof flags) != 0) {
        FAIL("%s: no VMA starts at %p any more", r->what, (void *)r->addr);
        return;
    }
    strcat(flags, " ");
    for (size_t i = 0; i < sizeof all_flags / sizeof all_flags[0]; i++) {
        int want = !strcmp(all_flags[i], r->flag);
        CHECK(has_flag(flags, all_flags[i]) == want, "%s: VmFlags '%s' %s %s", r->what, flags, want ? "lacks" : "has",
              all_flags[i]);
    }
    long bad = tgt_check_fill(r->addr, LEN, (uint32_t)(r - regions) + 1);
    CHECK(bad < 0, "%s: contents differ at offset %ld", r->what, bad);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    forkable_only = argc > 2 && !strcmp(argv[2], "unlocked-forkable");
    for (int i = 0; i < NREGIONS; i++) {
        struct region *r = &regions[i];
        if (skipped(r)) continue;
        /* A hole after each region keeps the kernel from merging neighbours with equal flags. */
        r->addr = SYSP(mmap(NULL, LEN + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | r->mmap_flags, -1, 0));
        if (r->addr == MAP_FAILED) tgt_die("mmap %s", r->what);
        SYS(munmap(r->addr + LEN, 4096));
        if (r->advice == -2) SYS(mlock(r->addr, LEN));
        else if (r->advice >= 0) SYS(madvise(r->addr, LEN, r->advice));
        tgt_fill(r->addr, LEN, (uint32_t)i + 1);
    }
    if (forkable_only) {
        tgt_ready("vmlck_kb=0\n");
        tgt_wait_verify(NULL);
        for (int i = 0; i < NREGIONS; i++)
            if (!skipped(&regions[i])) check_region(&regions[i]);
        CHECK_EQ("VmLck (KiB)", status_kb("VmLck:"), 0);
        pid_t child = fork();
        if (child == 0) _exit(tgt_check_zero(regions[11].addr, LEN) < 0 ? 0 : 2);
        int st = 0;
        VSYS(waitpid(child, &st, 0));
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "MADV_WIPEONFORK region not zero in a forked child");
        tgt_publish_result();
        tgt_idle();
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/mapped.dat", tgt_ctl);
    int fd = SYS(open(path, O_RDWR | O_CREAT | O_TRUNC, 0600));
    char page[4096];
    for (int i = 0; i < PAGES; i++) {
        memset(page, 'a' + i, sizeof page);
        if (write(fd, page, sizeof page) != (ssize_t)sizeof page) tgt_die("write %s", path);
    }
    file_map = SYSP(mmap(NULL, LEN, PROT_READ, MAP_PRIVATE, fd, 0));
    if (file_map == MAP_FAILED) tgt_die("mmap %s", path);
    close(fd);
    SYS(mlock(file_map, LEN));
    long locked = status_kb("VmLck:");
    char info[64];
    snprintf(info, sizeof info, "vmlck_kb=%ld\n", locked);
    tgt_ready(info);
    tgt_wait_verify(NULL);

    for (int i = 0; i < NREGIONS; i++) check_region(&regions[i]);
    char flags[256];
    if (vmflags_of(file_map, flags, sizeof flags) == 0) {
        strcat(flags, " ");
        CHECK(has_flag(flags, "lo"), "mlock()ed file mapping: VmFlags '%s' lacks lo", flags);
    } else {
        FAIL("mlock()ed file mapping gone");
    }
    CHECK(file_map[0] == 'a' && file_map[3 * 4096] == 'd', "file mapping contents");
    CHECK(resident(regions[0].addr, LEN) && resident(regions[1].addr, LEN) && resident(file_map, LEN),
          "locked regions not resident");
    CHECK_EQ("VmLck (KiB)", status_kb("VmLck:"), locked);

    /* DONTFORK and WIPEONFORK, as a child sees them. */
    pid_t child = fork();
    if (child == 0) {
        unsigned char vec[1];
        int gone = mincore(regions[6].addr, 4096, vec) != 0 && errno == ENOMEM;
        int wiped = tgt_check_zero(regions[11].addr, LEN) < 0;
        _exit((gone ? 0 : 1) | (wiped ? 0 : 2));
    }
    int st = 0;
    VSYS(waitpid(child, &st, 0));
    CHECK(WIFEXITED(st) && !(WEXITSTATUS(st) & 1), "MADV_DONTFORK region present in a forked child");
    CHECK(WIFEXITED(st) && !(WEXITSTATUS(st) & 2), "MADV_WIPEONFORK region not zero in a forked child");
    tgt_publish_result();
    tgt_idle();
}
