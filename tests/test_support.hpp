#pragma once
// Helpers shared by the MPI tests: oracle files and rank-agreed verdicts.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "dhess/dist/block_cyclic.hpp"
#include "dhess/io/npy.hpp"

namespace dhess::test {

// Directory the oracle fixture wrote (tests/oracle/make_cases.py).
inline std::string oracle(const std::string& file) {
  const char* dir = std::getenv("DHESS_ORACLE_DIR");
  return std::string(dir ? dir : "oracle") + "/" + file;
}

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int world_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

inline double max_all(double v) {
  double out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return out;
}

// max |A - B| over the whole distributed matrix, relative to max |B|, where B is
// a dense row-major n×n oracle; every rank gets the same number.
template <typename T>
double relative_difference(const BlockCyclicMatrix<T>& a, const NpyArray& b) {
  const int64_t n = b.shape.at(1);
  double diff = 0, scale = 0;
  for (double v : b.data) scale = std::max(scale, std::abs(v));
  for (int64_t lj = 0; lj < a.local_cols(); ++lj)
    for (int64_t li = 0; li < a.local_rows(); ++li) {
      double expected = b.data[a.global_row(li) * n + a.global_col(lj)];
      diff = std::max(diff, std::abs(static_cast<double>(a.at_local(li, lj)) - expected));
    }
  return max_all(diff) / std::max(scale, 1e-300);
}

}  // namespace dhess::test
