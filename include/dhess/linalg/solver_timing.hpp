#pragma once
// The eigensolver's time at n, estimated by timing it on random matrices: dhess plan's estimate,
// and what a run's rank-revealing sketch may spend before the full solver would have been cheaper.
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
// a·n³ + b·n² and divided among `ranks` (see solver_timing.cpp), in about `max_seconds` at most
// (dhess plan: 10; a run deciding whether to try its sketch first: 2). `budget_bytes` bounds the
// largest test matrix; it must be the same on every rank (the ranks time side by side and agree on
// every step). Collective.
// A cheap lower bound on a full eigensolver's time at n on `ranks` ranks: the flops of its reduction
// (4/3 n^3 to tridiagonal form, 10/3 n^3 with every eigenvector) at the rate of a dgemm on every
// rank's core, which no eigensolver's reduction reaches. Timed once per process (a few 512 x 512
// products, milliseconds); every rank must give the same `ranks` and take the same decision from it
// (the rate is agreed, the slowest rank's). Collective.
double solver_seconds_lower_bound(const EigenRequest& request, int64_t n, int ranks, MPI_Comm comm);

SolverTiming time_solver(Solver solver, const EigenRequest& request, int64_t n, int block, Dtype dtype, int ranks,
                         double budget_bytes, MPI_Comm comm, double max_seconds = 10);

}  // namespace dhess
