#pragma once
// The eigensolver's time at n, estimated by timing it on random matrices before the run.
#include <mpi.h>

#include <cstdint>
#include <string>

#include "dhess/linalg/eigensolver.hpp"

namespace dhess {

struct SolverTiming {
  double seconds = 0;
  std::string basis;  // how the estimate was made, for the plan's reader
  bool upper_bound = false;
};

// Times `solver` on one process per rank on random symmetric matrices of doubling size, fitted to
// a·n³ + b·n² and divided among `ranks` (see solver_timing.cpp). `budget_bytes` bounds the
// largest test matrix; it must be the same on every rank (the ranks time side by side and agree
// on every step). Collective.
SolverTiming time_solver(Solver solver, const EigenRequest& request, int64_t n, int block, Dtype dtype, int ranks,
                         double budget_bytes, MPI_Comm comm);

}  // namespace dhess
