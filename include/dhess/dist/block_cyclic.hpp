#pragma once
// BlockCyclicMatrix<T>: a rank's share of a ScaLAPACK 2D block-cyclic matrix
// (column-major local storage) and its descriptor.
#include <array>
#include <cstdint>
#include <vector>

#include "dhess/dist/process_grid.hpp"

namespace dhess {

// Global index → owning process coordinate, and local index on that process.
struct CyclicAxis {
  int64_t n;   // global extent
  int block;   // block size
  int procs;   // processes along this axis
  int source;  // process holding the first block
  int owner(int64_t i) const { return static_cast<int>(((i / block) + source) % procs); }
  int64_t local(int64_t i) const { return (i / (static_cast<int64_t>(block) * procs)) * block + i % block; }
  int64_t global(int64_t l, int proc) const {
    int shift = (proc - source + procs) % procs;
    return ((l / block) * procs + shift) * static_cast<int64_t>(block) + l % block;
  }
  int64_t local_extent(int proc) const;  // numroc
};

template <typename T>
class BlockCyclicMatrix {
 public:
  // An m×n matrix with mb×nb blocks on the grid's 2D context, first block on process (0, 0).
  BlockCyclicMatrix(const ProcessGrid& grid, int64_t m, int64_t n, int mb, int nb);
  // A descriptor over another context (e.g. the 1×P panel row) with first
  // block column on process column `col_source`.
  BlockCyclicMatrix(int context, int64_t m, int64_t n, int mb, int nb, int col_source);

  int64_t rows() const { return rows_.n; }
  int64_t cols() const { return cols_.n; }
  int row_block() const { return rows_.block; }
  int col_block() const { return cols_.block; }
  const CyclicAxis& row_axis() const { return rows_; }
  const CyclicAxis& col_axis() const { return cols_; }
  int my_row() const { return my_row_; }
  int my_col() const { return my_col_; }
  int64_t local_rows() const { return local_rows_; }
  int64_t local_cols() const { return local_cols_; }
  int64_t lld() const { return lld_; }
  const int* desc() const { return desc_.data(); }
  int context() const { return desc_[1]; }

  T* data() { return storage_.data(); }
  const T* data() const { return storage_.data(); }
  std::size_t local_bytes() const { return storage_.size() * sizeof(T); }
  void release() { std::vector<T>().swap(storage_); }

  bool owns(int64_t i, int64_t j) const { return rows_.owner(i) == my_row_ && cols_.owner(j) == my_col_; }
  // Local element (li, lj); column-major.
  T& at_local(int64_t li, int64_t lj) { return storage_[static_cast<std::size_t>(li + lj * lld_)]; }
  T at_local(int64_t li, int64_t lj) const { return storage_[static_cast<std::size_t>(li + lj * lld_)]; }
  // Global element (i, j); only on the owning process.
  T& at(int64_t i, int64_t j) { return at_local(rows_.local(i), cols_.local(j)); }
  int64_t global_row(int64_t li) const { return rows_.global(li, my_row_); }
  int64_t global_col(int64_t lj) const { return cols_.global(lj, my_col_); }

 private:
  void init(int context, int col_source);
  CyclicAxis rows_, cols_;
  int my_row_ = -1, my_col_ = -1;
  int64_t local_rows_ = 0, local_cols_ = 0, lld_ = 1;
  std::array<int, 9> desc_{};
  std::vector<T> storage_;
};

// The whole of `source`'s sub-matrix (ia, ja, m×n; 0-based) copied into `target` at (ib, jb);
// every process of `context` (which must span both grids) calls it.
template <typename T>
void redistribute(int64_t m, int64_t n, const T* source, int64_t ia, int64_t ja, const int* desc_source, T* target,
                  int64_t ib, int64_t jb, const int* desc_target, int context);

// target (m×n, at (0,0)) = source(ia:ia+n, ja:ja+m)ᵀ; collective over the shared context.
template <typename T>
void transpose(int64_t m, int64_t n, const T* source, int64_t ia, int64_t ja, const int* desc_source, T* target,
               const int* desc_target);

}  // namespace dhess
