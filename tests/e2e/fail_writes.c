// LD_PRELOAD shim for the end-to-end error tests: makes writes to files whose
// path ends with $DHESS_FAIL_WRITES fail with ENOSPC, on the MPI rank
// $DHESS_FAIL_RANK only (or on every rank when it is unset), at file offsets
// from $DHESS_FAIL_FROM on (default 0). A disk that fills up in the middle of
// a parallel write, on one rank, on demand; nothing in dhess knows about it. Built by the tests with: cc -shared -fPIC -o x.so fail_writes.c -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int should_fail(int fd, off_t offset) {
  const char* pattern = getenv("DHESS_FAIL_WRITES");
  if (!pattern || !*pattern) return 0;
  const char* rank = getenv("OMPI_COMM_WORLD_RANK");
  const char* wanted = getenv("DHESS_FAIL_RANK");
  if (!rank) return 0;  // mpiexec itself
  if (wanted && *wanted && strcmp(rank, wanted) != 0) return 0;
  char link[64], target[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t len = readlink(link, target, sizeof target - 1);
  if (len <= 0) return 0;
  target[len] = '\0';
  size_t n = strlen(pattern);  // a suffix: helper files (MPI-IO's, say) may carry the name too
  if ((size_t)len < n || strcmp(target + len - n, pattern) != 0) return 0;
  const char* from = getenv("DHESS_FAIL_FROM");
  if (offset < 0) offset = lseek(fd, 0, SEEK_CUR);
  return !(from && *from && offset < (off_t)atoll(from));
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))
#define FAIL_IF_TARGET(fd, offset) \
  if (should_fail(fd, offset)) {   \
    errno = ENOSPC;                \
    return -1;                     \
  }

ssize_t write(int fd, const void* buf, size_t count) {
  FAIL_IF_TARGET(fd, -1);
  return NEXT(write)(fd, buf, count);
}
ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  FAIL_IF_TARGET(fd, offset);
  return NEXT(pwrite)(fd, buf, count, offset);
}
ssize_t pwrite64(int fd, const void* buf, size_t count, off_t offset) {
  FAIL_IF_TARGET(fd, offset);
  return NEXT(pwrite64)(fd, buf, count, offset);
}
ssize_t writev(int fd, const struct iovec* iov, int n) {
  FAIL_IF_TARGET(fd, -1);
  return NEXT(writev)(fd, iov, n);
}
ssize_t pwritev(int fd, const struct iovec* iov, int n, off_t offset) {
  FAIL_IF_TARGET(fd, offset);
  return NEXT(pwritev)(fd, iov, n, offset);
}
ssize_t pwritev64(int fd, const struct iovec* iov, int n, off_t offset) {
  FAIL_IF_TARGET(fd, offset);
  return NEXT(pwritev64)(fd, iov, n, offset);
}
ssize_t pwritev2(int fd, const struct iovec* iov, int n, off_t offset, int flags) {
  FAIL_IF_TARGET(fd, offset);
  return NEXT(pwritev2)(fd, iov, n, offset, flags);
}
