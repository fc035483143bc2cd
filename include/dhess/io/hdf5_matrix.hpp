#pragma once
// Parallel HDF5 output of a block-cyclic matrix: every rank writes its own
// blocks into one dataset, nothing is gathered to one rank.
#include <string>
#include <vector>

#include "dhess/dist/block_cyclic.hpp"

namespace dhess {

// Writes columns [first, first + count) of `matrix` as dataset `name` (rows × count,
// row-major as h5py reads it) of a new file `path`. Collective over the grid's ranks.
template <typename T>
void write_hdf5_matrix(const std::string& path, const std::string& name, const BlockCyclicMatrix<T>& matrix,
                       int64_t first, int64_t count, MPI_Comm comm);

// Writes an n×cols float64 dataset whose rows [row0, row0 + rows) this rank holds
// as a column-major rows×cols array (vectors sharded by rows). Collective.
void write_hdf5_row_shards(const std::string& path, const std::string& name, const double* local, int64_t row0,
                           int64_t rows, int64_t n, int64_t cols, MPI_Comm comm);

// Writes named float64 arrays (e.g. one per parameter tensor, in its shape) to a
// new file from this process alone.
struct NamedArray {
  std::string name;
  std::vector<int64_t> shape;
  const double* data;
};
void write_hdf5_arrays(const std::string& path, const std::vector<NamedArray>& arrays);

}  // namespace dhess
