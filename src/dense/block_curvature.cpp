#include "dhess/dense/block_curvature.hpp"

#include <algorithm>

#include "dhess/dense/assembler.hpp"
#include "dhess/linalg/eigensolver.hpp"

namespace dhess {
namespace {

// H's rows and columns of `block`, as one matrix on the same grid and blocking.
template <typename T>
BlockCyclicMatrix<T> diagonal_block(const ProcessGrid& grid, const BlockCyclicMatrix<T>& h,
                                    const ParameterBlock& block) {
  BlockCyclicMatrix<T> b(grid, block.size, block.size, h.row_block(), h.col_block());
  int64_t jb = 0;
  for (const auto& [j0, j1] : block.ranges) {
    int64_t ib = 0;
    for (const auto& [i0, i1] : block.ranges) {
      redistribute<T>(i1 - i0, j1 - j0, h.data(), i0, j0, h.desc(), b.data(), ib, jb, b.desc(), grid.context());
      ib += i1 - i0;
    }
    jb += j1 - j0;
  }
  return b;
}

}  // namespace

template <typename T>
std::vector<BlockCurvature> dense_block_curvature(const ProcessGrid& grid, const BlockCyclicMatrix<T>& h,
                                                  const std::vector<ParameterBlock>& blocks, int64_t top) {
  std::vector<BlockCurvature> result;
  for (const auto& block : blocks) {
    BlockCyclicMatrix<T> b = diagonal_block(grid, h, block);
    BlockCurvature c{block, trace(grid, b), 0, true, {}, ""};
    const EigenRequest values{EigenRequest::Kind::values, 0};
    const Solver solver = resolve_solver(Solver::automatic, values, b.row_block(), grid.rows(), grid.cols(), block.size,
                                         std::is_same_v<T, double> ? Dtype::float64 : Dtype::float32);
    Spectrum<T> s = solve(grid, b, values, solver);
    const auto count = std::min<std::size_t>(static_cast<std::size_t>(top), s.values.size());
    c.top.assign(s.values.rbegin(), s.values.rbegin() + static_cast<std::ptrdiff_t>(count));
    c.top_method = "eigenvalues of the diagonal block of the assembled matrix (" + s.routine + ")";
    result.push_back(std::move(c));
  }
  return result;
}

template std::vector<BlockCurvature> dense_block_curvature<double>(const ProcessGrid&, const BlockCyclicMatrix<double>&,
                                                                   const std::vector<ParameterBlock>&, int64_t);
template std::vector<BlockCurvature> dense_block_curvature<float>(const ProcessGrid&, const BlockCyclicMatrix<float>&,
                                                                  const std::vector<ParameterBlock>&, int64_t);

}  // namespace dhess
