#pragma once
// Per-block curvature of the dense run, from the assembled matrix and no further product: each
// block's diagonal block copied out of H (pdgemr2d of its ranges), its trace and its largest
// eigenvalues (values only, by the solver --solver auto takes for that size).
#include <cstdint>
#include <vector>

#include "dhess/core/blocks.hpp"
#include "dhess/dist/block_cyclic.hpp"
#include "dhess/dist/process_grid.hpp"

namespace dhess {

// Collective over the grid. `h` is left as it was.
template <typename T>
std::vector<BlockCurvature> dense_block_curvature(const ProcessGrid& grid, const BlockCyclicMatrix<T>& h,
                                                  const std::vector<ParameterBlock>& blocks, int64_t top);

}  // namespace dhess
