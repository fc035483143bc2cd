#include "dhess/dist/block_cyclic.hpp"

#include <limits>
#include <string>

#include "blacs.hpp"
#include "dhess/core/errors.hpp"

namespace dhess {

namespace {
int as_int(int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<int>::max())
    throw UsageError(std::string(what) + " " + std::to_string(v) + " exceeds ScaLAPACK's 32-bit index range");
  return static_cast<int>(v);
}
}  // namespace

int64_t CyclicAxis::local_extent(int proc) const {
  int nn = as_int(n, "matrix size"), zero = source;
  return numroc_(&nn, &block, &proc, &zero, &procs);
}

template <typename T>
BlockCyclicMatrix<T>::BlockCyclicMatrix(const ProcessGrid& grid, int64_t m, int64_t n, int mb, int nb)
    : rows_{m, mb, grid.rows(), 0}, cols_{n, nb, grid.cols(), 0} {
  init(grid.context(), 0);
  storage_.assign(static_cast<std::size_t>(lld_ * local_cols_), T(0));
}

template <typename T>
BlockCyclicMatrix<T>::BlockCyclicMatrix(int context, int64_t m, int64_t n, int mb, int nb, int col_source)
    : rows_{m, mb, 1, 0}, cols_{n, nb, 1, col_source} {
  int pr = 0, pc = 0, r = 0, c = 0;
  Cblacs_gridinfo(context, &pr, &pc, &r, &c);
  rows_.procs = pr;
  cols_.procs = pc;
  init(context, col_source);
  storage_.assign(static_cast<std::size_t>(lld_ * local_cols_), T(0));
}

template <typename T>
void BlockCyclicMatrix<T>::init(int context, int col_source) {
  if (rows_.block < 1 || cols_.block < 1) throw UsageError("block size must be positive");
  int pr = 0, pc = 0;
  Cblacs_gridinfo(context, &pr, &pc, &my_row_, &my_col_);
  local_rows_ = my_row_ >= 0 ? rows_.local_extent(my_row_) : 0;
  local_cols_ = my_col_ >= 0 ? cols_.local_extent(my_col_) : 0;
  lld_ = std::max<int64_t>(1, local_rows_);
  int m = as_int(rows_.n, "row count"), n = as_int(cols_.n, "column count");
  int lld = as_int(lld_, "local leading dimension"), zero = 0, info = 0;
  descinit_(desc_.data(), &m, &n, &rows_.block, &cols_.block, &zero, &col_source, &context, &lld, &info);
  if (info != 0) throw InternalError("descinit failed with info " + std::to_string(info));
}

template <typename T>
void redistribute(int64_t m, int64_t n, const T* source, int64_t ia, int64_t ja, const int* desc_source, T* target,
                  int64_t ib, int64_t jb, const int* desc_target, int context) {
  int mm = as_int(m, "rows"), nn = as_int(n, "columns");
  int a_i = as_int(ia + 1, "row"), a_j = as_int(ja + 1, "column");
  int b_i = as_int(ib + 1, "row"), b_j = as_int(jb + 1, "column");
  if constexpr (std::is_same_v<T, double>)
    pdgemr2d_(&mm, &nn, source, &a_i, &a_j, desc_source, target, &b_i, &b_j, desc_target, &context);
  else
    psgemr2d_(&mm, &nn, source, &a_i, &a_j, desc_source, target, &b_i, &b_j, desc_target, &context);
}

template <typename T>
void transpose(int64_t m, int64_t n, const T* source, int64_t ia, int64_t ja, const int* desc_source, T* target,
               const int* desc_target) {
  int mm = as_int(m, "rows"), nn = as_int(n, "columns");
  int a_i = as_int(ia + 1, "row"), a_j = as_int(ja + 1, "column"), one = 1;
  T alpha = 1, beta = 0;
  if constexpr (std::is_same_v<T, double>)
    pdtran_(&mm, &nn, &alpha, source, &a_i, &a_j, desc_source, &beta, target, &one, &one, desc_target);
  else
    pstran_(&mm, &nn, &alpha, source, &a_i, &a_j, desc_source, &beta, target, &one, &one, desc_target);
}

template class BlockCyclicMatrix<double>;
template class BlockCyclicMatrix<float>;
template void redistribute<double>(int64_t, int64_t, const double*, int64_t, int64_t, const int*, double*, int64_t,
                                   int64_t, const int*, int);
template void transpose<double>(int64_t, int64_t, const double*, int64_t, int64_t, const int*, double*, const int*);
template void transpose<float>(int64_t, int64_t, const float*, int64_t, int64_t, const int*, float*, const int*);
template void redistribute<float>(int64_t, int64_t, const float*, int64_t, int64_t, const int*, float*, int64_t,
                                  int64_t, const int*, int);

}  // namespace dhess
