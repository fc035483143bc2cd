#pragma once
// H·X for row-sharded X when every rank holds the model and a shard of the data: gather each
// vector, apply this rank's data-shard Hessian, and reduce-scatter the sum back into row shards.
#include <mpi.h>

#include <cstdint>
#include <vector>

#include "dhess/dist/row_shard.hpp"
#include "dhess/linalg/sharded.hpp"
#include "dhess/torch/hvp.hpp"

namespace dhess {

class DataParallelOperator {
 public:
  // At most `max_columns` vectors per product (their full n-vectors are what each rank holds).
  DataParallelOperator(HvpEngine& engine, const RowShard& shard, MPI_Comm comm, int64_t max_columns);
  // y = H·x for k vectors, this rank's rows (column-major rows × k). Collective.
  void operator()(const double* x, int64_t k, double* y);
  int64_t products() const { return products_; }

 private:
  HvpEngine& engine_;
  RowShard shard_;
  MPI_Comm comm_;
  int64_t max_columns_;
  std::vector<double> full_x_, full_y_;
  int64_t products_ = 0;
};

// The exact diagonal of H, this rank's rows: H e_j for every j, `panel` unit vectors per product.
std::vector<double> exact_diagonal(const ShardedOperator& op, const RowShard& shard, int64_t panel);

}  // namespace dhess
