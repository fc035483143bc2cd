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
  // Products made before the run needed them (the start-up's measuring products, made of the
  // phases' first probes): a vector gathered later that equals one of these bit for bit takes its
  // kept product instead of a new one, which is then let go.
  void keep(StartupProducts&& made);
  int64_t kept() const { return kept_count_; }
  int64_t reused() const { return reused_; }

 private:
  struct Kept {
    std::vector<double> vector, product;
  };
  // Moves the gathered vectors without a kept product to the front of full_x_, and returns for each
  // of the kk columns the kept product it takes (-1: none).
  std::vector<int64_t> match_kept(int64_t kk);
  // full_y_ = the products of the kk gathered vectors, the kept ones taken (and let go).
  void apply_gathered(int64_t kk);

  HvpEngine& engine_;
  RowShard shard_;
  MPI_Comm comm_;
  int64_t max_columns_;
  std::vector<double> full_x_, full_y_;
  int64_t products_ = 0, kept_count_ = 0, reused_ = 0;
  std::vector<Kept> kept_;
};

// The exact diagonal of H, this rank's rows: H e_j for every j, `panel` unit vectors per product.
std::vector<double> exact_diagonal(const ShardedOperator& op, const RowShard& shard, int64_t panel);

}  // namespace dhess
