#pragma once
// NumPy .npy files (format 1.0, little-endian, C order). Written by hand: no
// Debian package provides a C++ npy writer, and the format is one header line.
#include <cstdint>
#include <string>
#include <vector>

namespace dhess {

void write_npy(const std::string& path, const double* data, const std::vector<int64_t>& shape);

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<double> data;  // converted to float64, C order
};
// Reads '<f8' or '<f4' arrays in C order; throws InputError naming the file otherwise.
NpyArray read_npy(const std::string& path);

}  // namespace dhess
