#include "dhess/dense/column_split_operator.hpp"

#include <algorithm>

#include "dhess/core/collective.hpp"

namespace dhess {

ColumnSplitOperator::ColumnSplitOperator(HvpEngine& engine, int64_t n, MPI_Comm comm)
    : engine_(engine), comm_(comm), counts_(n, comm, RowShard::blocks) {
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &size_);
  shard_ = RowShard::blocks(n, rank_, size_);
}

// Rounds of one panel per rank: column c0 + i goes to rank i / panel, whole.
void ColumnSplitOperator::operator()(const double* x, int64_t k, double* y) {
  const int64_t n = shard_.n, rows = shard_.rows(), panel = engine_.panel_width();
  whole_x_.resize(static_cast<std::size_t>(n * panel));
  whole_y_.resize(whole_x_.size());
  for (int64_t c0 = 0; c0 < k; c0 += panel * size_) {
    const int64_t round = std::min(panel * size_, k - c0);
    auto owner = [&](int64_t i) { return static_cast<int>(i / panel); };
    const int64_t mine = std::clamp<int64_t>(round - rank_ * panel, 0, panel);
    for (int64_t i = 0; i < round; ++i)
      gather_column(x + (c0 + i) * rows, shard_, counts_, whole_x_.data() + (i % panel) * n, owner(i), comm_);
    run_collectively(comm_, [&] {
      if (mine > 0) engine_.apply(whole_x_.data(), mine, whole_y_.data());
    });
    for (int64_t i = 0; i < round; ++i)
      scatter_column(whole_y_.data() + (i % panel) * n, shard_, counts_, y + (c0 + i) * rows, owner(i), comm_);
  }
}

}  // namespace dhess
