#include <malloc.h>
#include <mpi.h>

#include <cstdio>

#include "dhess/app/cli.hpp"
#include "dhess/core/interrupt.hpp"

int main(int argc, char** argv) {
  // Every batched HVP allocates and frees multi-MB autograd temporaries. glibc's default mmap()s
  // and munmap()s them and trims the heap after each; 32 MiB (glibc's largest mmap threshold on
  // 64-bit) and a 1 GiB trim threshold keep them in the heap: HVPs 1.3-1.5x faster than the
  // default (bench/NOTES.md, "Allocator").
  if (mallopt(M_MMAP_THRESHOLD, 32 << 20) != 1 || mallopt(M_TRIM_THRESHOLD, 1 << 30) != 1)
    std::fprintf(stderr, "dhess: warning: glibc refused the allocator settings; HVPs may run slower\n");
  dhess::catch_stop_signals();
  MPI_Init(&argc, &argv);
  dhess::catch_stop_signals();  // MPI_Init may install its own handlers
  const int code = dhess::run_cli(argc, argv, MPI_COMM_WORLD);
  MPI_Finalize();
  return code;
}
