// Per-block curvature without forming the matrix: traces from the diagonal phase, top eigenvalues
// by Lanczos on each block's restriction.
#include <algorithm>

#include "dhess/linalg/sharded.hpp"
#include "spectrum_phases.hpp"

namespace dhess {
namespace {

// This rank's rows that belong to `block`.
std::vector<char> rows_of(const ParameterBlock& block, const RowShard& shard) {
  std::vector<char> inside(static_cast<std::size_t>(shard.rows()), 0);
  for (const auto& [begin, end] : block.ranges)
    for (int64_t row = std::max(begin, shard.begin); row < std::min(end, shard.begin + shard.rows()); ++row)
      inside[static_cast<std::size_t>(row - shard.begin)] = 1;
  return inside;
}

void zero_outside(const std::vector<char>& inside, int64_t k, double* x) {
  const auto rows = static_cast<int64_t>(inside.size());
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = 0; i < rows; ++i)
      if (!inside[static_cast<std::size_t>(i)]) x[c * rows + i] = 0.0;
}

// The block's subspace without the eigenvectors found so far: x <- P (I - Z Zᵀ) x, Z orthonormal
// inside the block (rows × found).
struct Deflation {
  std::vector<char> inside;
  std::vector<double> z;
  int64_t found = 0;
  MPI_Comm comm;

  void apply(double* x, int64_t k) const {
    const auto rows = static_cast<int64_t>(inside.size());
    zero_outside(inside, k, x);
    for (int64_t c = 0; c < k && found > 0; ++c)
      for (int pass = 0; pass < 2; ++pass)
        subtract(z, rows, found, project(z, rows, found, x + c * rows, comm), x + c * rows);
  }
};

// The `top` largest eigenvalues of the block's restriction P C P, one Lanczos run each on the
// complement of the eigenvectors found before: a single Krylov space holds one copy of a repeated
// eigenvalue, and a Linear layer's block is a Kronecker product whose eigenvalues repeat.
std::vector<double> largest_of_block(const ShardedOperator& op, std::vector<char> inside, const RowShard& shard,
                                     const LanczosOptions& lanczos, MPI_Comm comm, int64_t& steps, bool& converged) {
  LanczosOptions o = lanczos;
  const int64_t rows = shard.rows(), wanted = lanczos.top;
  Deflation d{std::move(inside), {}, 0, comm};
  const ShardedOperator deflated = [&](const double* x, int64_t k, double* y) {
    std::vector<double> xd(x, x + rows * k);
    d.apply(xd.data(), k);
    op(xd.data(), k, y);
    d.apply(y, k);
  };
  o.top = 1;
  o.bottom = 0;
  o.start_filter = [&](double* v) { d.apply(v, 1); };
  std::vector<double> values;
  steps = 0;
  converged = true;
  for (int64_t j = 0; j < wanted && d.found < shard.n; ++j) {
    // A fresh start each run: the last one's start had no component left in an eigenspace whose
    // eigenvector (the start's own projection onto it) was just deflated.
    o.seed = lanczos.seed + 7919 * static_cast<uint64_t>(j);
    LanczosResult l = lanczos_extremes(deflated, shard, o, comm);
    steps += l.steps;
    converged = converged && l.pairs.back().converged;
    values.push_back(l.pairs.back().value);
    d.apply(l.vectors.data(), 1);
    const double length = norm(l.vectors.data(), rows, comm);
    if (length == 0) break;  // the block holds no further direction
    for (double& v : l.vectors) v /= length;
    d.z.insert(d.z.end(), l.vectors.begin(), l.vectors.begin() + rows);
    ++d.found;
  }
  return values;
}

}  // namespace

RowGroups row_groups(const std::vector<ParameterBlock>& blocks, const RowShard& shard) {
  RowGroups groups;
  groups.of_row.assign(static_cast<std::size_t>(shard.rows()), -1);
  groups.count = static_cast<int>(blocks.size());
  for (int b = 0; b < groups.count; ++b) {
    const std::vector<char> inside = rows_of(blocks[b], shard);
    for (std::size_t i = 0; i < inside.size(); ++i)
      if (inside[i]) groups.of_row[i] = b;
  }
  return groups;
}

std::vector<BlockCurvature> spectrum_block_curvature(const ShardedOperator& op, const RowShard& shard,
                                                     const std::vector<ParameterBlock>& blocks,
                                                     const DiagonalResult& diagonal,
                                                     const std::vector<TraceEstimate>& traces,
                                                     const LanczosOptions& lanczos, MPI_Comm comm) {
  const bool exact = diagonal.stderr_values.empty();
  std::vector<BlockCurvature> result;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    BlockCurvature c;
    c.block = blocks[b];
    std::vector<char> inside = rows_of(c.block, shard);
    if (exact) {
      double local = 0;
      for (std::size_t i = 0; i < inside.size(); ++i)
        if (inside[i]) local += diagonal.values[i];
      c.trace = allsum(local, comm);
    } else {
      c.trace = traces[b].value;
      c.trace_stderr = traces[b].stderr_value;
      c.trace_exact = false;
    }
    int64_t steps = 0;
    bool converged = true;
    c.top = largest_of_block(op, std::move(inside), shard, lanczos, comm, steps, converged);
    c.top_method = "Lanczos on the block's restriction, deflated by each eigenvector found (" + std::to_string(steps) +
                   " steps" + (converged ? "" : "; not all converged: raise --max-steps") + ")";
    result.push_back(std::move(c));
  }
  return result;
}

}  // namespace dhess
