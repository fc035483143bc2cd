#include <mpi.h>

#include "dhess/app/cli.hpp"
#include "dhess/core/interrupt.hpp"

int main(int argc, char** argv) {
  dhess::catch_stop_signals();
  MPI_Init(&argc, &argv);
  dhess::catch_stop_signals();  // MPI_Init may install its own handlers
  const int code = dhess::run_cli(argc, argv, MPI_COMM_WORLD);
  MPI_Finalize();
  return code;
}
