#pragma once
// The trace and the diagonal of H from products with random probes, over row-sharded vectors.
#include <mpi.h>

#include <cstdint>
#include <vector>

#include "dhess/dist/row_shard.hpp"
#include "dhess/matfree/sharded_operator.hpp"

namespace dhess {

struct TraceEstimate {
  double hutchinson = 0, hutchinson_stderr = 0;
  double hutchpp = 0, hutchpp_stderr = 0;
  int64_t probes = 0;
};
// Hutchinson (`products` Rademacher vectors) and Hutch++ (the same number of products: a third
// sketches the top subspace exactly, the rest estimate the remainder).
TraceEstimate estimate_trace(const ShardedOperator& op, const RowShard& shard, int64_t products, uint64_t seed,
                             MPI_Comm comm);

// Hutchinson-type diagonal estimate mean(v ⊙ Hv) over `probes` Rademacher vectors, with the
// per-entry standard error; this rank's rows.
void estimate_diagonal(const ShardedOperator& op, const RowShard& shard, int64_t probes, uint64_t seed,
                       std::vector<double>& diagonal, std::vector<double>& stderr_out, MPI_Comm comm);

}  // namespace dhess
