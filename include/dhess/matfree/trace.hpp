#pragma once
// The trace and the diagonal of H from products with random probes, over row-sharded vectors.
#include <mpi.h>

#include <cstdint>
#include <vector>

#include "dhess/dist/row_shard.hpp"
#include "dhess/linalg/sharded.hpp"

namespace dhess {

struct TraceEstimate {
  double value = 0, stderr_value = 0;
  int64_t products = 0;
};
// Hutchinson: the mean of vᵀHv over `products` Rademacher vectors, `chunk` of them held at a time.
TraceEstimate hutchinson_trace(const ShardedOperator& op, const RowShard& shard, int64_t products, int64_t chunk,
                               uint64_t seed, MPI_Comm comm);
// Hutch++ with `products` products: a third sketch the top subspace, whose trace is taken exactly
// (another third, held whole), the rest estimate the remainder, `chunk` at a time (Meyer, Musco,
// Musco, Woodruff 2021).
TraceEstimate hutchpp_trace(const ShardedOperator& op, const RowShard& shard, int64_t products, int64_t chunk,
                            uint64_t seed, MPI_Comm comm);

// Groups of rows (blocks of parameters): this rank's rows, each the index of its group or -1.
struct RowGroups {
  std::vector<int> of_row;
  int count = 0;
};

// Hutchinson-type diagonal estimate mean(v ⊙ Hv) over `probes` Rademacher vectors, with the
// per-entry standard error; this rank's rows. Where `groups` is given, also each group's trace from
// the same probes, with its standard error (the entries of one probe are not independent, so a
// group's error comes from its per-probe sums).
void estimate_diagonal(const ShardedOperator& op, const RowShard& shard, int64_t probes, uint64_t seed,
                       std::vector<double>& diagonal, std::vector<double>& stderr_out, MPI_Comm comm,
                       const RowGroups* groups = nullptr, std::vector<TraceEstimate>* group_traces = nullptr);

}  // namespace dhess
