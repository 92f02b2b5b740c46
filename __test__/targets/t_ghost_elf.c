/*
 * A deleted ELF held open: a copy of this very program, written to CTL/ghost.elf, opened
 * O_RDONLY and unlinked (as a process keeps a library or plugin whose file was removed). A dumper
 * keeps it as a ghost file; CRIU also records its build-id, as for any regular file whose size it
 * records, and checks it against the file it recreates.
 * Verification: still unlinked (st_nlink 0), offset 7, and every byte the same as the program's
 * own executable (the same build, so the same bytes).
 */
#include "common.h"

static uint8_t *slurp(int fd, size_t *len) {
    struct stat st;
    if (fstat(fd, &st) != 0) return NULL;
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    if (!buf) return NULL;
    ssize_t n = pread(fd, buf, (size_t)st.st_size + 1, 0);
    if (n != st.st_size) {
        free(buf);
        return NULL;
    }
    *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/ghost.elf", tgt_ctl);
    int self = SYS(open("/proc/self/exe", O_RDONLY));
    size_t len = 0;
    uint8_t *image = slurp(self, &len);
    if (!image) tgt_die("reading /proc/self/exe");
    close(self);
    int w = SYS(open(path, O_WRONLY | O_CREAT | O_EXCL, 0755));
    for (size_t off = 0; off < len;) {
        ssize_t n = write(w, image + off, len - off);
        if (n <= 0) tgt_die("writing %s", path);
        off += (size_t)n;
    }
    close(w);
    int fd = SYS(open(path, O_RDONLY));
    SYS(lseek(fd, 7, SEEK_SET));
    SYS(unlink(path));
    tgt_ready(NULL);
    tgt_wait_verify(NULL);

    struct stat st;
    if (VSYS(fstat(fd, &st)) == 0) {
        CHECK_EQ("nlink", st.st_nlink, 0);
        CHECK_EQ("size", (size_t)st.st_size, len);
        CHECK_EQ("mode", st.st_mode & 07777, 0755);
    }
    CHECK(access(path, F_OK) != 0, "the deleted ELF reappeared at %s", path);
    CHECK_EQ("offset", lseek(fd, 0, SEEK_CUR), 7);
    CHECK_EQ("access mode", fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
    size_t got_len = 0;
    uint8_t *got = slurp(fd, &got_len);
    CHECK(got && got_len == len && !memcmp(got, image, len), "the deleted ELF's bytes differ from the program's");
    tgt_publish_result();
    tgt_idle();
}
