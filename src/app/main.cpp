#include <malloc.h>
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "dhess/app/cli.hpp"
#include "dhess/core/interrupt.hpp"

namespace {

// `dhess compile ...` is the Python package's compiler (python/dhess/compile.py): tracing and
// AOTInductor run in Python. It runs in the Python dhess was built with (DHESS_PYTHON overrides),
// before MPI starts, so that it takes no rank.
int run_compile(int argc, char** argv) {
  const char* python = std::getenv("DHESS_PYTHON");
  if (python == nullptr || *python == '\0') python = DHESS_BUILD_PYTHON;
  std::vector<char*> args{const_cast<char*>(python), const_cast<char*>("-m"), const_cast<char*>("dhess.compile")};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  execvp(python, args.data());
  std::fprintf(stderr, "dhess: error: cannot run %s for dhess compile: %s (set DHESS_PYTHON)\n", python,
               std::strerror(errno));
  return 69;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "compile") == 0) return run_compile(argc, argv);
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
