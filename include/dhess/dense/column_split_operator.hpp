#pragma once
// H·X for row-sharded X on the dense path, where every rank holds the model and all the data:
// each rank takes a share of the k vectors whole and applies H to them by Hessian-vector
// products, the way H's columns were made. The rank-revealing sketch multiplies H this way: a
// product costs what a column did (bench/RESULTS.md: 2,500 columns/s on the convnet at n =
// 23,365, where pdgemm with the assembled H does 30).
#include <mpi.h>

#include <cstdint>
#include <vector>

#include "dhess/dist/row_shard.hpp"
#include "dhess/torch/hvp.hpp"

namespace dhess {

class ColumnSplitOperator {
 public:
  // Vectors of n rows sharded as RowShard::blocks, the rank-revealing solver's layout (lowrank.hpp).
  ColumnSplitOperator(HvpEngine& engine, int64_t n, MPI_Comm comm);
  // y = H·x for k vectors, this rank's rows (column-major rows × k). Collective.
  void operator()(const double* x, int64_t k, double* y);

 private:
  HvpEngine& engine_;
  RowShard shard_;
  MPI_Comm comm_;
  ShardCounts counts_;
  int rank_ = 0, size_ = 1;
  std::vector<double> whole_x_, whole_y_;
};

}  // namespace dhess
