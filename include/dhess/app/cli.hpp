#pragma once
#include <mpi.h>

namespace dhess {

// Parses the command line and runs the chosen command on every rank of `comm`.
// Returns the process exit code; aborts the job when a rank fails alone.
int run_cli(int argc, char** argv, MPI_Comm comm);

}  // namespace dhess
