#pragma once
// Parallel HDF5 output of a block-cyclic matrix: every rank writes its own
// blocks into one dataset, nothing is gathered to one rank.
#include <string>

#include "dhess/block_cyclic.hpp"

namespace dhess {

// Writes columns [first, first + count) of `matrix` as dataset `name` (rows × count,
// row-major as h5py reads it) of a new file `path`. Collective over the grid's ranks.
template <typename T>
void write_hdf5_matrix(const std::string& path, const std::string& name, const BlockCyclicMatrix<T>& matrix,
                       int64_t first, int64_t count, MPI_Comm comm);

}  // namespace dhess
