#include "dhess/matfree/data_parallel_operator.hpp"

#include <malloc.h>

#include <algorithm>

#include "dhess/core/collective.hpp"

namespace dhess {

DataParallelOperator::DataParallelOperator(HvpEngine& engine, const RowShard& shard, MPI_Comm comm, int64_t max_columns)
    : engine_(engine), shard_(shard), comm_(comm), max_columns_(std::max<int64_t>(1, max_columns)) {}

void DataParallelOperator::keep(StartupProducts&& made) {
  const auto n = static_cast<std::size_t>(shard_.n);
  for (int64_t c = 0; c < made.made; ++c)
    kept_.push_back({std::vector<double>(made.vectors.begin() + c * n, made.vectors.begin() + (c + 1) * n),
                     std::vector<double>(made.products.begin() + c * n, made.products.begin() + (c + 1) * n)});
  kept_count_ += made.made;
  made = StartupProducts();
}

std::vector<int64_t> DataParallelOperator::match_kept(int64_t kk) {
  const auto n = static_cast<std::size_t>(shard_.n);
  std::vector<int64_t> taken(static_cast<std::size_t>(kk), -1);
  std::vector<bool> used(kept_.size(), false);
  int64_t fresh = 0;
  for (int64_t c = 0; c < kk; ++c) {
    const double* column = full_x_.data() + c * n;
    for (std::size_t j = 0; j < kept_.size() && taken[c] < 0; ++j)
      if (!used[j] && std::equal(column, column + n, kept_[j].vector.begin())) {
        taken[c] = static_cast<int64_t>(j);
        used[j] = true;
      }
    if (taken[c] < 0 && fresh++ != c) std::copy(column, column + n, full_x_.data() + (fresh - 1) * n);
  }
  return taken;
}

void DataParallelOperator::apply_gathered(int64_t kk) {
  const auto n = static_cast<std::size_t>(shard_.n);
  const std::vector<int64_t> taken = match_kept(kk);
  const int64_t fresh = std::count(taken.begin(), taken.end(), int64_t(-1));
  // Every rank enters, with or without products to make.
  run_collectively(comm_, [&] {
    if (fresh > 0) engine_.apply(full_x_.data(), fresh, full_y_.data());
  });
  // The made products back to their columns, the last first (each moves right, if at all).
  for (int64_t c = kk - 1, f = fresh - 1; c >= 0 && f >= 0; --c)
    if (taken[c] < 0) {
      if (f != c) std::copy(full_y_.begin() + f * n, full_y_.begin() + (f + 1) * n, full_y_.begin() + c * n);
      --f;
    }
  std::vector<int64_t> let_go;
  for (int64_t c = 0; c < kk; ++c)
    if (taken[c] >= 0) {
      std::copy(kept_[taken[c]].product.begin(), kept_[taken[c]].product.end(), full_y_.begin() + c * n);
      let_go.push_back(taken[c]);
    }
  reused_ += static_cast<int64_t>(let_go.size());
  std::sort(let_go.rbegin(), let_go.rend());
  for (int64_t j : let_go) kept_.erase(kept_.begin() + j);
}

void DataParallelOperator::operator()(const double* x, int64_t k, double* y) {
  const int64_t n = shard_.n, rows = shard_.rows();
  for (int64_t c0 = 0; c0 < k; c0 += max_columns_) {
    const int64_t kk = std::min(max_columns_, k - c0);
    full_x_.resize(static_cast<std::size_t>(n * kk));
    full_y_.resize(full_x_.size());
    allgather_columns(x + c0 * rows, shard_, kk, full_x_.data(), comm_);
    apply_gathered(kk);
    // What the product freed goes back to the kernel: kept for reuse, it fragments across
    // products and the peak creeps past the plan (1.3x on a ResNet in 10 products), for 6% time.
    malloc_trim(0);
    reduce_scatter_columns(full_y_.data(), shard_, kk, y + c0 * rows, comm_);
    products_ += kk;
  }
}

std::vector<double> exact_diagonal(const ShardedOperator& op, const RowShard& shard, int64_t panel) {
  const int64_t rows = shard.rows();
  std::vector<double> diag(static_cast<std::size_t>(rows), 0.0);
  for (int64_t j0 = 0; j0 < shard.n; j0 += panel) {
    const int64_t k = std::min(panel, shard.n - j0);
    std::vector<double> x(static_cast<std::size_t>(rows * k), 0.0), y(x.size());
    auto mine = [&](int64_t c) { return j0 + c >= shard.begin && j0 + c < shard.end; };
    for (int64_t c = 0; c < k; ++c)
      if (mine(c)) x[c * rows + (j0 + c - shard.begin)] = 1.0;
    op(x.data(), k, y.data());
    for (int64_t c = 0; c < k; ++c)
      if (mine(c)) diag[j0 + c - shard.begin] = y[c * rows + (j0 + c - shard.begin)];
  }
  return diag;
}

}  // namespace dhess
