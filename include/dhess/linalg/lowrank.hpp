#pragma once
// The rank-revealing eigensolver over an assembled H: the certified randomized range finder
// (range_finder.hpp) with H·Ω from `products` where given (the dense run's Hessian-vector
// products, which cost what a column of H did), else from pdgemm with the assembled H; then the
// eigenpairs of QᵀHQ. Exact when it answers:
// every nonzero eigenvalue within the certificate, the others zero within it.
#include <cstdint>
#include <optional>

#include "dhess/linalg/eigensolver.hpp"
#include "dhess/linalg/range_finder.hpp"
#include "dhess/linalg/sharded.hpp"

namespace dhess {

// `options.max_columns` bounds the sketch (lowrank_sketch_columns). Answers --eigen values (all n,
// the zeros included), top:K and bottom:K when the K are nonzero; unset where it cannot (the rank
// passed max_columns, or the request reaches zero eigenvalues), with `report` saying why. `report`
// gets the rank, products and certificate either way. `products` applies H to vectors sharded in
// RowShard::blocks(n, grid.rank(), grid.size()) rows. Collective over the grid's ranks.
std::optional<Spectrum<double>> lowrank_solve(const ProcessGrid& grid, const BlockCyclicMatrix<double>& h,
                                              const EigenRequest& request, const RangeFinderOptions& options,
                                              LowRankReport& report, const ShardedOperator& products = {});

}  // namespace dhess
