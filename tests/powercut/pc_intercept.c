/* pc_intercept: an LD_PRELOAD library that journals every change a process
 * makes to the files and directories under one directory, so that the
 * power-cut harness (powercut_test.cc, rollback.cc) can put them back into
 * any state a disk could hold had the power failed at the moment the process
 * was killed. In the spirit of ALICE and CrashMonkey, without root.
 *
 * Environment (unset PC_ROOT: every call passes straight through):
 *   PC_ROOT     canonical absolute directory; what is under it is tracked
 *   PC_JOURNAL  the journal file (outside PC_ROOT), format: pc_journal.h
 *   PC_STASH    a directory on the same file system (outside PC_ROOT) where
 *               a file an unlink or rename removes is kept (a hard link) so
 *               the removal can be undone
 *   PC_KILL_AT  N > 0: the process SIGKILLs itself just before its N-th
 *               tracked change, before journaling it (a cut at an exact
 *               point; the driver may also kill it at any moment)
 *
 * Intercepted: open/openat/creat (O_CREAT, O_TRUNC, O_SYNC/O_DSYNC
 * descriptors), write/pwrite/writev/pwritev(2), sendfile/copy_file_range
 * into a tracked file (done as writes), ftruncate/truncate, fallocate/
 * posix_fallocate, fsync/fdatasync/msync/sync/syncfs, mkdir, rename,
 * unlink, rmdir, link, dup/dup2/dup3/fcntl(F_DUPFD), close. Changes the
 * harness cannot undo - a writable shared mapping of a tracked file, a
 * stdio stream writing one - are journaled as PC_UNSUPPORTED and fail the
 * experiment. LMDB's lock.mdb is tracked as a name only: its contents are a
 * shared-memory reader table that LMDB rebuilds after a crash.
 *
 * Every tracked change holds one mutex while it is journaled and made, so
 * the journal's order is the order of the changes; fsync runs outside it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pc_journal.h"

#define MAX_FDS 4096
#define MAX_FILES 4096

struct FdInfo {
  int tracked;
  uint32_t file;
  int sync; /* O_SYNC or O_DSYNC */
  int append;
};

struct FileInfo {
  dev_t dev;
  ino_t ino;
  int rfd; /* a read-only descriptor of the same file, for old bytes */
  int is_dir;
  int lockfile; /* lock.mdb: a name only */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int enabled;
static int journal_fd = -1;
static char root[PATH_MAX];
static size_t root_len;
static char stash_dir[PATH_MAX];
static uint64_t seq;
static uint64_t ops;
static uint64_t kill_at;
static uint64_t stash_n;
static struct FdInfo fds[MAX_FDS];
static struct FileInfo files[MAX_FILES + 1]; /* ids from 1 */
static uint32_t nfiles;

/* --- the real functions ------------------------------------------------ */

#define REAL(ret, name, ...)                                           \
  static ret (*real_##name)(__VA_ARGS__);                              \
  static ret (*get_##name(void))(__VA_ARGS__) {                        \
    if (!real_##name) *(void**)&real_##name = dlsym(RTLD_NEXT, #name); \
    return real_##name;                                                \
  }

REAL(int, open, const char*, int, ...)
REAL(int, openat, int, const char*, int, ...)
REAL(ssize_t, write, int, const void*, size_t)
REAL(ssize_t, pwrite, int, const void*, size_t, off_t)
REAL(ssize_t, writev, int, const struct iovec*, int)
REAL(ssize_t, pwritev, int, const struct iovec*, int, off_t)
REAL(ssize_t, pwritev2, int, const struct iovec*, int, off_t, int)
REAL(int, ftruncate, int, off_t)
REAL(int, truncate, const char*, off_t)
REAL(int, fallocate, int, int, off_t, off_t)
REAL(int, posix_fallocate, int, off_t, off_t)
REAL(int, fsync, int)
REAL(int, fdatasync, int)
REAL(int, msync, void*, size_t, int)
REAL(void, sync, void)
REAL(int, syncfs, int)
REAL(int, mkdirat, int, const char*, mode_t)
REAL(int, renameat2, int, const char*, int, const char*, unsigned)
REAL(int, unlinkat, int, const char*, int)
REAL(int, link, const char*, const char*)
REAL(int, linkat, int, const char*, int, const char*, int)
REAL(int, close, int)
REAL(int, dup, int)
REAL(int, dup2, int, int)
REAL(int, dup3, int, int, int)
REAL(int, fcntl, int, int, ...)
REAL(void*, mmap, void*, size_t, int, int, int, off_t)
REAL(FILE*, fopen, const char*, const char*)

static void init(void) {
  const char* r = getenv("PC_ROOT");
  const char* j = getenv("PC_JOURNAL");
  const char* s = getenv("PC_STASH");
  const char* k = getenv("PC_KILL_AT");
  if (!r || !j || !s || strlen(r) >= sizeof(root) || strlen(s) >= sizeof(stash_dir)) return;
  strcpy(root, r);
  root_len = strlen(root);
  while (root_len > 1 && root[root_len - 1] == '/') root[--root_len] = 0;
  strcpy(stash_dir, s);
  if (k) kill_at = strtoull(k, NULL, 10);
  journal_fd = get_open()(j, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (journal_fd < 0) {
    fprintf(stderr, "pc_intercept: cannot open the journal %s\n", j);
    abort();
  }
  enabled = 1;
}

static int on(void) {
  pthread_once(&once, init);
  return enabled;
}

/* --- the journal -------------------------------------------------------- */

static void write_all(const struct iovec* iov, int n) {
  struct iovec v[8];
  memcpy(v, iov, sizeof(struct iovec) * n);
  int i = 0;
  while (i < n) {
    ssize_t w = get_writev()(journal_fd, v + i, n - i);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      fprintf(stderr, "pc_intercept: writing the journal failed\n");
      abort();
    }
    while (i < n && (size_t)w >= v[i].iov_len) w -= (ssize_t)v[i++].iov_len;
    if (i < n) {
      v[i].iov_base = (char*)v[i].iov_base + w;
      v[i].iov_len -= (size_t)w;
    }
  }
}

/* Journals one record; returns its sequence number. `p2` may be several
 * buffers (a writev's). Called with `mu` held. */
static uint64_t journal(uint32_t type, uint32_t file, uint64_t a, uint64_t b, uint64_t c,
                        const void* p1, size_t l1, const struct iovec* p2, int n2) {
  struct PcRecord h;
  memset(&h, 0, sizeof(h));
  h.magic = PC_MAGIC;
  h.type = type;
  h.seq = ++seq;
  h.file = file;
  h.len1 = (uint32_t)l1;
  h.a = a;
  h.b = b;
  h.c = c;
  for (int i = 0; i < n2; ++i) h.len2 += p2[i].iov_len;
  /* Large writevs are journaled in several writes: a record is valid only
   * when complete, and the reader stops at the first incomplete one. */
  struct iovec v[8];
  int n = 0;
  v[n].iov_base = &h;
  v[n++].iov_len = sizeof(h);
  if (l1) {
    v[n].iov_base = (void*)p1;
    v[n++].iov_len = l1;
  }
  int i = 0;
  for (;;) {
    while (i < n2 && n < 8) v[n++] = p2[i++];
    write_all(v, n);
    if (i >= n2) break;
    n = 0;
  }
  return h.seq;
}

static uint64_t journal_path(uint32_t type, const char* p1, const char* p2, uint64_t a) {
  struct iovec v = {(void*)p2, p2 ? strlen(p2) : 0};
  return journal(type, 0, a, 0, 0, p1, strlen(p1), &v, p2 ? 1 : 0);
}

static void journal_done(uint64_t s, long result) {
  journal(PC_DONE, 0, s, (uint64_t)(int64_t)result, 0, NULL, 0, NULL, 0);
}

/* Counts a change and dies at PC_KILL_AT. */
static void count_op(void) {
  if (kill_at && ++ops == kill_at) kill(getpid(), SIGKILL);
}

/* --- paths and files ---------------------------------------------------- */

/* `path` (relative to `dirfd`) made absolute and lexically normal into
 * `out`; 0 when it could not be. */
static int abspath(int dirfd, const char* path, char* out) {
  char buf[2 * PATH_MAX];
  if (!path) return 0;
  if (path[0] == '/') {
    if (strlen(path) >= PATH_MAX) return 0;
    strcpy(buf, path);
  } else {
    char base[PATH_MAX];
    if (dirfd == AT_FDCWD) {
      if (!getcwd(base, sizeof(base))) return 0;
    } else {
      char link[64];
      snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
      ssize_t n = readlink(link, base, sizeof(base) - 1);
      if (n <= 0) return 0;
      base[n] = 0;
    }
    if (strlen(base) + strlen(path) + 2 >= PATH_MAX) return 0;
    snprintf(buf, sizeof(buf), "%s/%s", base, path);
  }
  /* Normalize: collapse "//", ".", "..". */
  size_t o = 0;
  const char* p = buf;
  out[0] = 0;
  while (*p) {
    while (*p == '/') ++p;
    if (!*p) break;
    const char* e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == 1 && p[0] == '.') {
    } else if (len == 2 && p[0] == '.' && p[1] == '.') {
      while (o > 0 && out[o - 1] != '/') --o;
      if (o > 0) --o;
      out[o] = 0;
    } else {
      if (o + len + 2 >= PATH_MAX) return 0;
      out[o++] = '/';
      memcpy(out + o, p, len);
      o += len;
      out[o] = 0;
    }
    p += len;
  }
  if (o == 0) strcpy(out, "/");
  return 1;
}

static int under_root(const char* abs) {
  return strncmp(abs, root, root_len) == 0 && (abs[root_len] == '/' || abs[root_len] == 0);
}

static int tracked_path(int dirfd, const char* path, char* abs) {
  return on() && abspath(dirfd, path, abs) && under_root(abs);
}

static int is_lockfile(const char* abs) {
  const char* slash = strrchr(abs, '/');
  return slash && strcmp(slash + 1, "lock.mdb") == 0;
}

/* The id of the file `fd` is open on (journaling its name when new). Called
 * with `mu` held. */
static uint32_t file_of(int fd, const char* abs) {
  struct stat st;
  if (fstat(fd, &st) != 0) return 0;
  for (uint32_t i = 1; i <= nfiles; ++i) {
    if (files[i].dev == st.st_dev && files[i].ino == st.st_ino) return i;
  }
  if (nfiles == MAX_FILES) return 0;
  uint32_t id = ++nfiles;
  files[id].dev = st.st_dev;
  files[id].ino = st.st_ino;
  files[id].is_dir = S_ISDIR(st.st_mode);
  files[id].lockfile = is_lockfile(abs);
  files[id].rfd = -1;
  if (!files[id].is_dir && !files[id].lockfile) {
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    files[id].rfd = get_open()(link, O_RDONLY | O_CLOEXEC);
  }
  journal(PC_NAME, id, st.st_dev, st.st_ino, files[id].is_dir, abs, strlen(abs), NULL, 0);
  return id;
}

static off_t size_of(uint32_t id) {
  struct stat st;
  return fstat(files[id].rfd, &st) == 0 ? st.st_size : 0;
}

/* The bytes of file `id` in [off, off+len) below its size, malloc'd. */
static char* old_bytes(uint32_t id, off_t off, size_t len, off_t size, size_t* got) {
  *got = off < size ? (size_t)(size - off < (off_t)len ? size - off : (off_t)len) : 0;
  char* buf = malloc(*got ? *got : 1);
  size_t done = 0;
  while (done < *got) {
    ssize_t n = pread(files[id].rfd, buf + done, *got - done, off + (off_t)done);
    if (n <= 0) break;
    done += (size_t)n;
  }
  *got = done;
  return buf;
}

static struct FdInfo* tracked_fd(int fd) {
  if (fd < 0 || fd >= MAX_FDS || !on()) return NULL;
  if (!__atomic_load_n(&fds[fd].tracked, __ATOMIC_ACQUIRE)) return NULL;
  return &fds[fd];
}

static void register_fd(int fd, const char* abs, int flags) {
  if (fd < 0) return;
  if (fd >= MAX_FDS) {
    journal(PC_UNSUPPORTED, 0, 0, 0, 0, abs, strlen(abs), NULL, 0);
    return;
  }
  uint32_t id = file_of(fd, abs);
  if (!id) return;
  fds[fd].file = id;
  fds[fd].sync = (flags & (O_SYNC | O_DSYNC)) != 0;
  fds[fd].append = (flags & O_APPEND) != 0;
  __atomic_store_n(&fds[fd].tracked, 1, __ATOMIC_RELEASE);
}

/* Journals the size change of file `id` to `new_size`, with the bytes it
 * cuts off. Called with `mu` held; returns the record's seq. */
static uint64_t journal_size(uint32_t id, off_t new_size) {
  off_t old = size_of(id);
  size_t got = 0;
  char* cut = old_bytes(id, new_size, new_size < old ? (size_t)(old - new_size) : 0, old, &got);
  uint64_t s = journal(PC_SIZE, id, (uint64_t)new_size, (uint64_t)old, 0, cut, got, NULL, 0);
  free(cut);
  return s;
}

/* --- open ---------------------------------------------------------------- */

static int do_open(int dirfd, const char* path, int flags, mode_t mode) {
  char abs[PATH_MAX];
  if (!tracked_path(dirfd, path, abs)) return get_openat()(dirfd, path, flags, mode);
  pthread_mutex_lock(&mu);
  struct stat st;
  const int existed = lstat(abs, &st) == 0;
  uint64_t s = 0;
  if ((flags & O_CREAT) && !existed) {
    count_op();
    s = journal_path(PC_CREATE, abs, NULL, 0);
  } else if (existed && (flags & O_TRUNC) && S_ISREG(st.st_mode) &&
             (flags & O_ACCMODE) != O_RDONLY && st.st_size > 0) {
    int rfd = get_open()(abs, O_RDONLY | O_CLOEXEC);
    if (rfd >= 0) {
      uint32_t id = file_of(rfd, abs);
      get_close()(rfd);
      if (id && !files[id].lockfile) {
        count_op();
        s = journal_size(id, 0);
      }
    }
  }
  int fd = get_openat()(dirfd, path, flags, mode);
  int err = errno;
  if (s) journal_done(s, fd < 0 ? -err : 0);
  if (fd >= 0) register_fd(fd, abs, flags);
  pthread_mutex_unlock(&mu);
  errno = err;
  return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
  return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_open(AT_FDCWD, path, flags, mode);
}
int open64(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_open(AT_FDCWD, path, flags, mode);
}
int openat(int dirfd, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_open(dirfd, path, flags, mode);
}
int openat64(int dirfd, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_open(dirfd, path, flags, mode);
}
int __open_2(const char* path, int flags) { return do_open(AT_FDCWD, path, flags, 0); }
int __open64_2(const char* path, int flags) { return do_open(AT_FDCWD, path, flags, 0); }
int __openat_2(int dirfd, const char* path, int flags) { return do_open(dirfd, path, flags, 0); }
int __openat64_2(int dirfd, const char* path, int flags) { return do_open(dirfd, path, flags, 0); }
int creat(const char* path, mode_t mode) {
  return do_open(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode);
}
int creat64(const char* path, mode_t mode) { return creat(path, mode); }

/* --- writes --------------------------------------------------------------- */

/* How a write is made once journaled. */
enum WriteKind { W_WRITE, W_PWRITE, W_WRITEV, W_PWRITEV, W_PWRITEV2 };

static ssize_t real_write_op(enum WriteKind k, int fd, const struct iovec* iov, int n, off_t off,
                             int flags) {
  switch (k) {
    case W_WRITE:
      return get_write()(fd, iov[0].iov_base, iov[0].iov_len);
    case W_PWRITE:
      return get_pwrite()(fd, iov[0].iov_base, iov[0].iov_len, off);
    case W_WRITEV:
      return get_writev()(fd, iov, n);
    case W_PWRITEV:
      return get_pwritev()(fd, iov, n, off);
    case W_PWRITEV2:
      return get_pwritev2()(fd, iov, n, off, flags);
  }
  return -1;
}

static ssize_t do_write(enum WriteKind k, int fd, const struct iovec* iov, int n, off_t off,
                        int flags) {
  struct FdInfo* info = tracked_fd(fd);
  if (!info || files[info->file].lockfile || files[info->file].is_dir) {
    return real_write_op(k, fd, iov, n, off, flags);
  }
  pthread_mutex_lock(&mu);
  const uint32_t id = info->file;
  const int positioned = k == W_PWRITE || k == W_PWRITEV || (k == W_PWRITEV2 && off != -1);
  const off_t size = size_of(id);
  off_t at = off;
  if (!positioned) at = info->append ? size : lseek(fd, 0, SEEK_CUR);
  size_t len = 0;
  for (int i = 0; i < n; ++i) len += iov[i].iov_len;
  count_op();
  size_t got = 0;
  char* old = old_bytes(id, at, len, size, &got);
  uint64_t s =
      journal(PC_WRITE, id, (uint64_t)at, (uint64_t)size, (uint64_t)info->sync, old, got, iov, n);
  free(old);
  ssize_t r = real_write_op(k, fd, iov, n, off, flags);
  int err = errno;
  journal_done(s, r < 0 ? -err : r);
  pthread_mutex_unlock(&mu);
  errno = err;
  return r;
}

ssize_t write(int fd, const void* buf, size_t count) {
  struct iovec v = {(void*)buf, count};
  return do_write(W_WRITE, fd, &v, 1, -1, 0);
}
ssize_t pwrite(int fd, const void* buf, size_t count, off_t off) {
  struct iovec v = {(void*)buf, count};
  return do_write(W_PWRITE, fd, &v, 1, off, 0);
}
ssize_t pwrite64(int fd, const void* buf, size_t count, off_t off) {
  return pwrite(fd, buf, count, off);
}
ssize_t writev(int fd, const struct iovec* iov, int n) {
  return do_write(W_WRITEV, fd, iov, n, -1, 0);
}
ssize_t pwritev(int fd, const struct iovec* iov, int n, off_t off) {
  return do_write(W_PWRITEV, fd, iov, n, off, 0);
}
ssize_t pwritev64(int fd, const struct iovec* iov, int n, off_t off) {
  return pwritev(fd, iov, n, off);
}
ssize_t pwritev2(int fd, const struct iovec* iov, int n, off_t off, int flags) {
  return do_write(W_PWRITEV2, fd, iov, n, off, flags);
}
ssize_t pwritev64v2(int fd, const struct iovec* iov, int n, off_t off, int flags) {
  return pwritev2(fd, iov, n, off, flags);
}

/* sendfile and copy_file_range into a tracked file: read, then write
 * through the journaled path. */
static ssize_t copy_into(int out_fd, off_t* out_off, int in_fd, off_t* in_off, size_t count) {
  char buf[65536];
  size_t done = 0;
  while (done < count) {
    size_t want = count - done < sizeof(buf) ? count - done : sizeof(buf);
    ssize_t r = in_off ? pread(in_fd, buf, want, *in_off) : read(in_fd, buf, want);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return done ? (ssize_t)done : -1;
    if (r == 0) break;
    ssize_t w = out_off ? pwrite(out_fd, buf, (size_t)r, *out_off) : write(out_fd, buf, (size_t)r);
    if (w < 0) return done ? (ssize_t)done : -1;
    if (in_off) *in_off += w;
    if (out_off) *out_off += w;
    if (!in_off && w < r) lseek(in_fd, w - r, SEEK_CUR);
    done += (size_t)w;
    if (w < r) break;
  }
  return (ssize_t)done;
}

ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count) {
  if (!tracked_fd(out_fd)) {
    static ssize_t (*real)(int, int, off_t*, size_t);
    if (!real) *(void**)&real = dlsym(RTLD_NEXT, "sendfile");
    return real(out_fd, in_fd, offset, count);
  }
  return copy_into(out_fd, NULL, in_fd, offset, count);
}
ssize_t sendfile64(int out_fd, int in_fd, off_t* offset, size_t count) {
  return sendfile(out_fd, in_fd, offset, count);
}
ssize_t copy_file_range(int in_fd, off_t* in_off, int out_fd, off_t* out_off, size_t len,
                        unsigned flags) {
  if (!tracked_fd(out_fd)) {
    static ssize_t (*real)(int, off_t*, int, off_t*, size_t, unsigned);
    if (!real) *(void**)&real = dlsym(RTLD_NEXT, "copy_file_range");
    return real(in_fd, in_off, out_fd, out_off, len, flags);
  }
  return copy_into(out_fd, out_off, in_fd, in_off, len);
}

/* --- sizes ---------------------------------------------------------------- */

static int size_change(int fd, off_t new_size, int (*op)(int, off_t, off_t, int), off_t a, off_t b,
                       int mode) {
  struct FdInfo* info = tracked_fd(fd);
  if (!info || files[info->file].lockfile) return op(fd, a, b, mode);
  pthread_mutex_lock(&mu);
  count_op();
  const off_t old = size_of(info->file);
  uint64_t s = journal_size(info->file, new_size < 0 ? old : new_size);
  int r = op(fd, a, b, mode);
  int err = errno;
  journal_done(s, r < 0 ? -err : 0);
  pthread_mutex_unlock(&mu);
  errno = err;
  return r;
}

static int op_ftruncate(int fd, off_t a, off_t b, int mode) {
  (void)b;
  (void)mode;
  return get_ftruncate()(fd, a);
}
static int op_fallocate(int fd, off_t a, off_t b, int mode) {
  return get_fallocate()(fd, mode, a, b);
}
static int op_posix_fallocate(int fd, off_t a, off_t b, int mode) {
  (void)mode;
  return get_posix_fallocate()(fd, a, b);
}

int ftruncate(int fd, off_t length) { return size_change(fd, length, op_ftruncate, length, 0, 0); }
int ftruncate64(int fd, off_t length) { return ftruncate(fd, length); }

int truncate(const char* path, off_t length) {
  char abs[PATH_MAX];
  if (!tracked_path(AT_FDCWD, path, abs)) return get_truncate()(path, length);
  int fd = get_open()(abs, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  pthread_mutex_lock(&mu);
  register_fd(fd, abs, 0);
  pthread_mutex_unlock(&mu);
  int r = ftruncate(fd, length);
  int err = errno;
  close(fd);
  errno = err;
  return r;
}
int truncate64(const char* path, off_t length) { return truncate(path, length); }

static off_t grown_size(int fd, off_t off, off_t len) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -1;
  return off + len > st.st_size ? off + len : st.st_size;
}

int fallocate(int fd, int mode, off_t off, off_t len) {
  struct FdInfo* info = tracked_fd(fd);
  if (info && (mode & ~FALLOC_FL_KEEP_SIZE) != 0) {
    pthread_mutex_lock(&mu);
    journal(PC_UNSUPPORTED, 0, 0, 0, 0, "fallocate mode", 14, NULL, 0);
    pthread_mutex_unlock(&mu);
  }
  const off_t new_size = (mode & FALLOC_FL_KEEP_SIZE) ? -1 : grown_size(fd, off, len);
  return size_change(fd, new_size, op_fallocate, off, len, mode);
}
int fallocate64(int fd, int mode, off_t off, off_t len) { return fallocate(fd, mode, off, len); }
int posix_fallocate(int fd, off_t off, off_t len) {
  return size_change(fd, grown_size(fd, off, len), op_posix_fallocate, off, len, 0);
}
int posix_fallocate64(int fd, off_t off, off_t len) { return posix_fallocate(fd, off, len); }

/* --- syncs ---------------------------------------------------------------- */

static int do_sync(uint32_t file, int (*op)(int), int fd) {
  pthread_mutex_lock(&mu);
  count_op();
  uint64_t s = journal(PC_SYNC, file, 0, 0, 0, NULL, 0, NULL, 0);
  pthread_mutex_unlock(&mu);
  int r = op(fd);
  int err = errno;
  pthread_mutex_lock(&mu);
  journal_done(s, r < 0 ? -err : 0);
  pthread_mutex_unlock(&mu);
  errno = err;
  return r;
}

int fsync(int fd) {
  struct FdInfo* info = tracked_fd(fd);
  return info ? do_sync(info->file, get_fsync(), fd) : get_fsync()(fd);
}
int fdatasync(int fd) {
  struct FdInfo* info = tracked_fd(fd);
  return info ? do_sync(info->file, get_fdatasync(), fd) : get_fdatasync()(fd);
}
static int sync_all_op(int fd) {
  (void)fd;
  get_sync()();
  return 0;
}
void sync(void) {
  if (on()) {
    do_sync(PC_ALL_FILES, sync_all_op, -1);
  } else {
    get_sync()();
  }
}
int syncfs(int fd) { return on() ? do_sync(PC_ALL_FILES, get_syncfs(), fd) : get_syncfs()(fd); }

/* Tracked shared mappings, for msync. */
#define MAX_MAPS 64
static struct {
  char* addr;
  size_t len;
  uint32_t file;
} maps[MAX_MAPS];

static uint32_t map_file;
static void* map_addr;
static size_t map_len;
static int msync_flags;
static int msync_op(int fd) {
  (void)fd;
  return get_msync()(map_addr, map_len, msync_flags);
}

int msync(void* addr, size_t len, int flags) {
  if (!on() || !(flags & MS_SYNC)) return get_msync()(addr, len, flags);
  uint32_t file = 0;
  pthread_mutex_lock(&mu);
  for (int i = 0; i < MAX_MAPS; ++i) {
    if (maps[i].addr && (char*)addr >= maps[i].addr && (char*)addr < maps[i].addr + maps[i].len) {
      file = maps[i].file;
    }
  }
  pthread_mutex_unlock(&mu);
  if (!file) return get_msync()(addr, len, flags);
  /* One msync at a time through the journal is enough for a test. */
  static pthread_mutex_t msync_mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&msync_mu);
  map_file = file;
  map_addr = addr;
  map_len = len;
  msync_flags = flags;
  int r = do_sync(map_file, msync_op, -1);
  pthread_mutex_unlock(&msync_mu);
  return r;
}

void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  void* p = get_mmap()(addr, len, prot, flags, fd, off);
  struct FdInfo* info = tracked_fd(fd);
  if (p != MAP_FAILED && info && !files[info->file].lockfile) {
    pthread_mutex_lock(&mu);
    if ((prot & PROT_WRITE) && (flags & MAP_SHARED)) {
      journal(PC_UNSUPPORTED, info->file, 0, 0, 0, "writable shared mapping", 23, NULL, 0);
    }
    for (int i = 0; i < MAX_MAPS; ++i) {
      if (!maps[i].addr) {
        maps[i].addr = p;
        maps[i].len = len;
        maps[i].file = info->file;
        break;
      }
    }
    pthread_mutex_unlock(&mu);
  }
  return p;
}
void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  return mmap(addr, len, prot, flags, fd, off);
}

/* --- the namespace -------------------------------------------------------- */

/* Keeps the file at `abs` (if any) as a hard link in the stash; returns its
 * number, 0 when there is none. Called with `mu` held. */
static uint64_t stash(const char* abs) {
  struct stat st;
  if (lstat(abs, &st) != 0 || S_ISDIR(st.st_mode)) return 0;
  char to[PATH_MAX + 32];
  /* The pid in the high bits: processes that run one after another with
   * the same stash (one journal each, RollBack of all of them) do not
   * collide. */
  uint64_t n = ((uint64_t)getpid() << 32) | ++stash_n;
  snprintf(to, sizeof(to), "%s/%llu", stash_dir, (unsigned long long)n);
  return get_link()(abs, to) == 0 ? n : 0;
}

int mkdirat(int dirfd, const char* path, mode_t mode) {
  char abs[PATH_MAX];
  if (!tracked_path(dirfd, path, abs)) return get_mkdirat()(dirfd, path, mode);
  pthread_mutex_lock(&mu);
  count_op();
  uint64_t s = journal_path(PC_MKDIR, abs, NULL, 0);
  int r = get_mkdirat()(dirfd, path, mode);
  int err = errno;
  journal_done(s, r < 0 ? -err : 0);
  pthread_mutex_unlock(&mu);
  errno = err;
  return r;
}
int mkdir(const char* path, mode_t mode) { return mkdirat(AT_FDCWD, path, mode); }

int renameat2(int olddir, const char* from, int newdir, const char* to, unsigned flags) {
  char a[PATH_MAX], b[PATH_MAX];
  const int ta = tracked_path(olddir, from, a), tb = tracked_path(newdir, to, b);
  if (!ta && !tb) return get_renameat2()(olddir, from, newdir, to, flags);
  pthread_mutex_lock(&mu);
  count_op();
  uint64_t s = journal_path(PC_RENAME, a, b, stash(b));
  int r = get_renameat2()(olddir, from, newdir, to, flags);
  int err = errno;
  journal_done(s, r < 0 ? -err : 0);
  pthread_mutex_unlock(&mu);
  errno = err;
  return r;
}
int renameat(int olddir, const char* from, int newdir, const char* to) {
  return renameat2(olddir, from, newdir, to, 0);
}
int rename(const char* from, const char* to) { return renameat2(AT_FDCWD, from, AT_FDCWD, to, 0); }

int unlinkat(int dirfd, const char* path, int flags) {
  char abs[PATH_MAX];
  if (!tracked_path(dirfd, path, abs)) return get_unlinkat()(dirfd, path, flags);
  pthread_mutex_lock(&mu);
  count_op();
  uint64_t s = (flags & AT_REMOVEDIR) ? journal_path(PC_RMDIR, abs, NULL, 0)
                                      : journal_path(PC_UNLINK, abs, NULL, stash(abs));
  int r = get_unlinkat()(dirfd, path, flags);
  int err = errno;
  journal_done(s, r < 0 ? -err : 0);
  pthread_mutex_unlock(&mu);
  errno = err;
  return r;
}
int unlink(const char* path) { return unlinkat(AT_FDCWD, path, 0); }
int rmdir(const char* path) { return unlinkat(AT_FDCWD, path, AT_REMOVEDIR); }

int linkat(int olddir, const char* from, int newdir, const char* to, int flags) {
  char b[PATH_MAX];
  if (!tracked_path(newdir, to, b)) return get_linkat()(olddir, from, newdir, to, flags);
  pthread_mutex_lock(&mu);
  count_op();
  uint64_t s = journal_path(PC_CREATE, b, NULL, 0);
  int r = get_linkat()(olddir, from, newdir, to, flags);
  int err = errno;
  journal_done(s, r < 0 ? -err : 0);
  pthread_mutex_unlock(&mu);
  errno = err;
  return r;
}
int link(const char* from, const char* to) { return linkat(AT_FDCWD, from, AT_FDCWD, to, 0); }

/* --- descriptors ---------------------------------------------------------- */

static void copy_fd(int from, int to) {
  if (to < 0 || to >= MAX_FDS) return;
  pthread_mutex_lock(&mu);
  if (from >= 0 && from < MAX_FDS && fds[from].tracked) {
    fds[to] = fds[from];
  } else {
    __atomic_store_n(&fds[to].tracked, 0, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&mu);
}

int close(int fd) {
  if (on() && fd >= 0 && fd < MAX_FDS && fds[fd].tracked) {
    pthread_mutex_lock(&mu);
    __atomic_store_n(&fds[fd].tracked, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&mu);
  }
  return get_close()(fd);
}
int dup(int fd) {
  int r = get_dup()(fd);
  if (r >= 0 && on()) copy_fd(fd, r);
  return r;
}
int dup2(int fd, int to) {
  int r = get_dup2()(fd, to);
  if (r >= 0 && on()) copy_fd(fd, r);
  return r;
}
int dup3(int fd, int to, int flags) {
  int r = get_dup3()(fd, to, flags);
  if (r >= 0 && on()) copy_fd(fd, r);
  return r;
}
int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  int r = get_fcntl()(fd, cmd, arg);
  if ((cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && r >= 0 && on()) copy_fd(fd, r);
  return r;
}
int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return fcntl(fd, cmd, arg);
}

/* stdio writes go to the kernel without passing through write(): a stream
 * writing a tracked file is a change the harness cannot see. */
FILE* fopen(const char* path, const char* mode) {
  char abs[PATH_MAX];
  if (tracked_path(AT_FDCWD, path, abs) && strpbrk(mode, "wa+")) {
    pthread_mutex_lock(&mu);
    journal(PC_UNSUPPORTED, 0, 0, 0, 0, abs, strlen(abs), NULL, 0);
    pthread_mutex_unlock(&mu);
  }
  return get_fopen()(path, mode);
}
FILE* fopen64(const char* path, const char* mode) { return fopen(path, mode); }
