/*
 * Files open under a name that was unlinked while another hard link keeps them (an editor's
 * "save" that renamed a new copy over the old name while the old one is still open; an rotated
 * log): CTL/linked.dat open O_RDWR at offset 5 and CTL/mapped.dat mapped MAP_SHARED, each
 * unlinked, each still linked as CTL/keep-*.dat. A dump needs a link remap for them (CRIU's
 * --link-remap: the ghost-file path only holds files with no link left).
 * Verification: the fd and the mapping are the very inodes CTL/keep-*.dat name (same dev/ino,
 * nlink 1, writes through them show there), contents and offset kept, the unlinked names
 * still absent, and no link_remap.* file left behind in CTL.
 */
#include "common.h"
#include <dirent.h>
#include <sys/mman.h>

static void make(const char *path, const char *keep, const char *text) {
    int fd = SYS(open(path, O_RDWR | O_CREAT | O_TRUNC, 0640));
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) tgt_die("write %s", path);
    close(fd);
    SYS(link(path, keep));
}

static void same_inode(const char *what, int fd, const char *keep) {
    struct stat a, b;
    if (VSYS(fstat(fd, &a)) || VSYS(stat(keep, &b))) return;
    CHECK(a.st_dev == b.st_dev && a.st_ino == b.st_ino, "%s: inode %lu, %s is %lu", what, (unsigned long)a.st_ino,
          keep, (unsigned long)b.st_ino);
    CHECK_EQ("nlink", a.st_nlink, 1);
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char linked[PATH_MAX + 32], keep[PATH_MAX + 32], mapped[PATH_MAX + 32], keep2[PATH_MAX + 32];
    snprintf(linked, sizeof linked, "%s/linked.dat", tgt_ctl);
    snprintf(keep, sizeof keep, "%s/keep-linked.dat", tgt_ctl);
    snprintf(mapped, sizeof mapped, "%s/mapped.dat", tgt_ctl);
    snprintf(keep2, sizeof keep2, "%s/keep-mapped.dat", tgt_ctl);
    make(linked, keep, "0123456789 linked");
    static char page[4096];
    memset(page, 'm', sizeof page);
    page[4095] = 0;
    make(mapped, keep2, page);
    int fd = SYS(open(linked, O_RDWR));
    SYS(lseek(fd, 5, SEEK_SET));
    SYS(dup2(fd, 10));
    close(fd);
    int mfd = SYS(open(mapped, O_RDWR));
    char *map = SYSP(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0));
    if (map == MAP_FAILED) tgt_die("mmap");
    close(mfd);
    SYS(unlink(linked));
    SYS(unlink(mapped));
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    same_inode("fd 10", 10, keep);
    CHECK_EQ("offset", lseek(10, 0, SEEK_CUR), 5);
    char buf[32] = {0};
    CHECK(pread(10, buf, 17, 0) == 17 && !memcmp(buf, "0123456789 linked", 17), "contents '%s'", buf);
    CHECK(pwrite(10, "X", 1, 0) == 1, "write: %s", strerror(errno));
    int k = open(keep, O_RDONLY);
    CHECK(k >= 0 && pread(k, buf, 1, 0) == 1 && buf[0] == 'X', "write through fd 10 not seen in %s", keep);
    if (k >= 0) close(k);
    CHECK(access(linked, F_OK) != 0, "%s exists again", linked);
    CHECK(map[0] == 'm' && map[4094] == 'm', "mapping contents");
    map[1] = 'Y';
    k = open(keep2, O_RDONLY);
    CHECK(k >= 0 && pread(k, buf, 2, 0) == 2 && buf[1] == 'Y', "mapping no longer shares %s", keep2);
    if (k >= 0) close(k);
    CHECK(access(mapped, F_OK) != 0, "%s exists again", mapped);
    DIR *d = opendir(tgt_ctl);
    for (struct dirent *e; d && (e = readdir(d));)
        CHECK(strncmp(e->d_name, "link_remap", 10) != 0, "%s left in CTL", e->d_name);
    if (d) closedir(d);
    tgt_publish_result();
    tgt_idle();
}
