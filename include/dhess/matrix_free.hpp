#pragma once
// Matrix-free spectrum of H (for n past the dense limit): Lanczos extreme
// eigenpairs, stochastic Lanczos quadrature density, Hutchinson/Hutch++ trace,
// and the diagonal. Vectors are sharded by rows across ranks; every product H·V
// is data-parallel: each rank applies the Hessian of its data shard and one
// reduce-scatter sums the shards' products.
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace dhess {

// This rank's contiguous rows [begin, end) of an n-vector.
struct RowShard {
  int64_t n = 0, begin = 0, end = 0;
  int64_t rows() const { return end - begin; }
  static RowShard of(int64_t n, int rank, int size);
};

// y_shard = H · x for k vectors given and returned as this rank's rows
// (column-major rows×k); collective.
using ShardedOperator = std::function<void(const double* x_shard, int64_t k, double* y_shard)>;

struct LanczosOptions {
  int64_t top = 10, bottom = 10;
  int64_t max_steps = 300;
  double tolerance = 1e-8;  // converged: ‖Hz − θz‖ ≤ tolerance · max|θ|
  uint64_t seed = 0;
};

struct RitzPair {
  double value = 0;
  double residual = 0;  // ‖Hz − θz‖ / max|θ|, from a fresh product H·z
  bool converged = false;
};

struct LanczosResult {
  std::vector<RitzPair> pairs;     // ascending: the bottom ones, then the top ones
  std::vector<double> vectors;     // this rank's rows of the Ritz vectors, column-major rows × pairs
  int64_t steps = 0;
  double norm_estimate = 0;        // max|θ| over all Ritz values
};

// Extreme eigenpairs by Lanczos with full reorthogonalization (two passes of
// classical Gram-Schmidt), stopped when every wanted pair meets the criterion.
LanczosResult lanczos_extremes(const ShardedOperator& op, const RowShard& shard, const LanczosOptions& options,
                               MPI_Comm comm);

struct QuadratureNode {
  int probe;
  double node, weight;  // Ritz value and squared first component (weights of a probe sum to 1)
};

// Stochastic Lanczos quadrature: `probes` Rademacher vectors, `steps` Lanczos
// steps each, run in lockstep so every step is one batched product. Full
// reorthogonalization when `reorthogonalize`.
std::vector<QuadratureNode> slq_nodes(const ShardedOperator& op, const RowShard& shard, int64_t probes, int64_t steps,
                                      bool reorthogonalize, uint64_t seed, MPI_Comm comm);

// Gaussian-smoothed density on `points` grid points over the nodes' range
// (padded by 5σ): integrates to 1; σ = sigma_rel · (max − min).
struct Density {
  std::vector<double> grid, density;
  double sigma = 0;
};
Density smooth_density(const std::vector<QuadratureNode>& nodes, int64_t probes, int points, double sigma_rel);

struct TraceEstimate {
  double hutchinson = 0, hutchinson_stderr = 0;
  double hutchpp = 0, hutchpp_stderr = 0;
  int64_t probes = 0;
};
// Hutchinson (`probes` Rademacher vectors) and Hutch++ (the same number of
// products: a third sketches the top subspace exactly, the rest estimate the remainder).
TraceEstimate estimate_trace(const ShardedOperator& op, const RowShard& shard, int64_t probes, uint64_t seed,
                             MPI_Comm comm);

// Hutchinson-type diagonal estimate mean(v ⊙ Hv) over `probes` Rademacher
// vectors, with the per-entry standard error; this rank's rows.
void estimate_diagonal(const ShardedOperator& op, const RowShard& shard, int64_t probes, uint64_t seed,
                       std::vector<double>& diagonal, std::vector<double>& stderr_out, MPI_Comm comm);

}  // namespace dhess
