#pragma once
// The spectral density of H by stochastic Lanczos quadrature over row-sharded vectors.
#include <mpi.h>

#include <cstdint>
#include <vector>

#include "dhess/dist/row_shard.hpp"
#include "dhess/linalg/sharded.hpp"

namespace dhess {

struct QuadratureNode {
  int probe;
  double node, weight;  // Ritz value and squared first component (weights of a probe sum to 1)
};

// `probes` Rademacher vectors, `steps` Lanczos steps each, run in lockstep so every step is one
// batched product. Full reorthogonalization when `reorthogonalize`.
std::vector<QuadratureNode> slq_nodes(const ShardedOperator& op, const RowShard& shard, int64_t probes, int64_t steps,
                                      bool reorthogonalize, uint64_t seed, MPI_Comm comm);

// Gaussian-smoothed density on `points` grid points over the nodes' range (padded by 5σ):
// integrates to 1; σ = sigma_rel · (max − min).
struct Density {
  std::vector<double> grid, density;
  double sigma = 0;
};
Density smooth_density(const std::vector<QuadratureNode>& nodes, int64_t probes, int points, double sigma_rel);

}  // namespace dhess
