#pragma once
// The dense run: Hessian columns → block-cyclic H → eigensolver → files.
#include <mpi.h>

#include "dhess/run/options.hpp"

namespace dhess {

void run_dense(const RunOptions& options, MPI_Comm comm);

}  // namespace dhess
