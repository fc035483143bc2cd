#pragma once
// Extreme eigenpairs of H by Lanczos over row-sharded vectors, for n past the dense limit.
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "dhess/dist/row_shard.hpp"
#include "dhess/linalg/sharded.hpp"

namespace dhess {

struct LanczosOptions {
  int64_t top = 10, bottom = 10;
  int64_t max_steps = 300;
  double tolerance = 1e-8;  // converged: ‖Hz − θz‖ ≤ tolerance · max|θ|
  uint64_t seed = 0;
  // Applied to the random start vector (this rank's rows) before it is normalized; none: all of
  // it. With an operator that maps a subspace into itself (a block's restriction P H P, deflated by
  // the eigenvectors found before), a start inside that subspace keeps the Krylov space there.
  std::function<void(double*)> start_filter = {};
  // Basis vectors held at most (0: max_steps, never restarted). Fewer restart the recurrence
  // (thick restart): the wanted Ritz vectors and as many of their neighbours as half the room holds
  // stay, the rest of the basis is dropped, and max_steps counts every product across restarts.
  int64_t basis = 0;
};

struct RitzPair {
  double value = 0;
  double residual = 0;  // ‖Hz − θz‖ / max|θ|, from a fresh product H·z
  bool converged = false;
};

struct LanczosResult {
  std::vector<RitzPair> pairs;  // ascending: the bottom ones, then the top ones
  std::vector<double> vectors;  // this rank's rows of the Ritz vectors, column-major rows × pairs
  int64_t steps = 0;            // products, across restarts
  int64_t basis = 0;            // basis vectors held at most
  int64_t restarts = 0;
  double norm_estimate = 0;  // max|θ| over all Ritz values
};

// Extreme eigenpairs by Lanczos with full reorthogonalization (two passes of classical
// Gram-Schmidt) against the basis held, thick-restarted when the basis is full, stopped when every
// wanted pair meets the criterion (decided the same on all ranks).
LanczosResult lanczos_extremes(const ShardedOperator& op, const RowShard& shard, const LanczosOptions& options,
                               MPI_Comm comm);

}  // namespace dhess
