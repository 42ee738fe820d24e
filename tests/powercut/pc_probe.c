/* pc_probe: a fixed sequence of file changes with known durability, for
 * powercut_test's checks of the harness itself (PowerCutHarnessTest).
 *
 * Usage: pc_probe DIR   (DIR exists, is synced, and is PC_ROOT)
 *   DIR/d/a   4096 bytes 'A', fsync'd, its entry and d's synced (durable);
 *             then, not synced: "BBBB" at 0 and 1000 bytes 'E' at 4096;
 *             then "CCCC" at 2048 through an O_DSYNC descriptor (durable)
 *   DIR/d/b   "bbbb", fsync'd, but d not synced after it was created
 *   DIR/e/c   "cccc", fsync'd, e synced, but DIR not synced after mkdir e
 * Prints "done" and waits to be killed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void check(int ok, const char* what) {
  if (!ok) {
    perror(what);
    exit(3);
  }
}

static void sync_dir(const char* path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY);
  check(fd >= 0 && fsync(fd) == 0, path);
  close(fd);
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  char d[4096], a[4096], b[4096], e[4096], c[4096];
  snprintf(d, sizeof(d), "%s/d", argv[1]);
  snprintf(a, sizeof(a), "%s/d/a", argv[1]);
  snprintf(b, sizeof(b), "%s/d/b", argv[1]);
  snprintf(e, sizeof(e), "%s/e", argv[1]);
  snprintf(c, sizeof(c), "%s/e/c", argv[1]);
  char buf[4096];
  check(mkdir(d, 0755) == 0, "mkdir d");
  int fa = open(a, O_CREAT | O_WRONLY, 0644);
  check(fa >= 0, "open a");
  memset(buf, 'A', sizeof(buf));
  check(write(fa, buf, 4096) == 4096 && fsync(fa) == 0, "write a");
  sync_dir(d);
  sync_dir(argv[1]);
  check(pwrite(fa, "BBBB", 4, 0) == 4, "pwrite B");
  memset(buf, 'E', 1000);
  check(pwrite(fa, buf, 1000, 4096) == 1000, "pwrite E");
  int fs = open(a, O_WRONLY | O_DSYNC);
  check(fs >= 0 && pwrite(fs, "CCCC", 4, 2048) == 4, "pwrite C");
  int fb = open(b, O_CREAT | O_WRONLY, 0644);
  check(fb >= 0 && write(fb, "bbbb", 4) == 4 && fsync(fb) == 0, "write b");
  check(mkdir(e, 0755) == 0, "mkdir e");
  int fc = open(c, O_CREAT | O_WRONLY, 0644);
  check(fc >= 0 && write(fc, "cccc", 4) == 4 && fsync(fc) == 0, "write c");
  sync_dir(e);
  printf("done\n");
  fflush(stdout);
  for (;;) pause();
}
