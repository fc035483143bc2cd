// HDF5 output of row-sharded vectors (matrix-free path) and of small named
// arrays written by one process. Same scheme as hdf5_matrix.cpp: serial HDF5
// writes the header on one process, every rank pwrite()s its own data.
#include <algorithm>
#include <fstream>
#include <vector>

#include "dhess/core/errors.hpp"
#include "dhess/io/hdf5_matrix.hpp"
#include "hdf5_raw.hpp"

namespace dhess {

void write_hdf5_row_shards(const std::string& path, const std::string& name, const double* local, int64_t row0,
                           int64_t rows, int64_t n, int64_t cols, MPI_Comm comm) {
  hdf5_raw::DatasetSpec spec{name, {n, cols}, false};
  const int64_t base = hdf5_raw::create_layout(path, {spec}, comm)[0];
  hdf5_raw::RankWriter file(
      path, "dataset '" + name + "' (" + std::to_string(n) + " x " + std::to_string(cols) + ") of '" + path + "'",
      spec.bytes(), comm);
  // This rank's rows are one contiguous region of the row-major file: written
  // in bands of a few MB, each transposed from the column-major local array.
  const int64_t q =
      std::clamp<int64_t>((int64_t(8) << 20) / (std::max<int64_t>(cols, 1) * 8), 1, std::max<int64_t>(rows, 1));
  std::vector<double> band;
  for (int64_t i0 = 0; i0 < rows; i0 += q) {
    const int64_t len = std::min(q, rows - i0);
    band.resize(static_cast<std::size_t>(len * cols));
    for (int64_t i = 0; i < len; ++i)
      for (int64_t c = 0; c < cols; ++c) band[i * cols + c] = local[c * rows + i0 + i];
    file.write(base + (row0 + i0) * cols * 8, band.data(), band.size() * sizeof(double));
  }
  file.finish();
}

void write_hdf5_arrays(const std::string& path, const std::vector<NamedArray>& arrays) {
  std::vector<hdf5_raw::DatasetSpec> specs;
  double bytes = 0;
  for (const auto& a : arrays) {
    specs.push_back({a.name, a.shape, false});
    bytes += specs.back().bytes();
  }
  hdf5_raw::require_space(path, bytes);
  const std::vector<int64_t> offsets = hdf5_raw::create_layout(path, specs);
  std::fstream out(path, std::ios::in | std::ios::out | std::ios::binary);
  for (std::size_t i = 0; i < arrays.size() && out; ++i) {
    out.seekp(offsets[i]);
    out.write(reinterpret_cast<const char*>(arrays[i].data), static_cast<std::streamsize>(specs[i].bytes()));
  }
  out.flush();
  if (!out) throw ResourceError("cannot write '" + path + "' (disk full or not writable?)");
}

}  // namespace dhess
