#include "dhess/linalg/sharded.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "blas.hpp"
#include "dhess/core/errors.hpp"

namespace dhess {
namespace {

int as_int(int64_t v) { return static_cast<int>(v); }

}  // namespace

double allsum(double v, MPI_Comm comm) {
  double out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_SUM, comm);
  return out;
}

void allsum(std::vector<double>& v, MPI_Comm comm) {
  MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_DOUBLE, MPI_SUM, comm);
}

std::vector<double> project(const std::vector<double>& v, int64_t rows, int64_t cols, const double* w, MPI_Comm comm) {
  std::vector<double> c(static_cast<std::size_t>(cols), 0.0);
  if (rows > 0 && cols > 0) {
    const int m = as_int(rows), n = as_int(cols), one = 1;
    const double alpha = 1, beta = 0;
    dgemv_("T", &m, &n, &alpha, v.data(), &m, w, &one, &beta, c.data(), &one);
  }
  allsum(c, comm);
  return c;
}

void subtract(const std::vector<double>& v, int64_t rows, int64_t cols, const std::vector<double>& c, double* w) {
  if (rows == 0 || cols == 0) return;
  const int m = as_int(rows), n = as_int(cols), one = 1;
  const double alpha = -1, beta = 1;
  dgemv_("N", &m, &n, &alpha, v.data(), &m, c.data(), &one, &beta, w, &one);
}

double norm(const double* w, int64_t rows, MPI_Comm comm) {
  double s = 0;
  for (int64_t i = 0; i < rows; ++i) s += w[i] * w[i];
  return std::sqrt(allsum(s, comm));
}

void tridiagonal_eigen(const std::vector<double>& alpha, const std::vector<double>& beta, int64_t m,
                       std::vector<double>& values, std::vector<double>& vectors) {
  values.assign(alpha.begin(), alpha.begin() + m);
  std::vector<double> e(beta.begin(), beta.begin() + std::max<int64_t>(m - 1, 0));
  e.resize(std::max<int64_t>(m, 1));
  vectors.assign(static_cast<std::size_t>(m * m), 0.0);
  std::vector<double> work(static_cast<std::size_t>(std::max<int64_t>(2 * m - 2, 1)));
  int mm = as_int(m), info = 0;
  dstev_("V", &mm, values.data(), e.data(), vectors.data(), &mm, work.data(), &info);
  if (info != 0) throw InternalError("dstev failed on the Lanczos tridiagonal (info = " + std::to_string(info) + ")");
}

std::vector<double> combine(const std::vector<double>& v, int64_t rows, int64_t m, const std::vector<double>& y,
                            int64_t k) {
  std::vector<double> z(static_cast<std::size_t>(rows * k), 0.0);
  if (rows == 0 || m == 0 || k == 0) return z;
  const int mr = as_int(rows), mk = as_int(k), mm = as_int(m);
  const double one = 1, zero = 0;
  dgemm_("N", "N", &mr, &mk, &mm, &one, v.data(), &mr, y.data(), &mm, &zero, z.data(), &mr);
  return z;
}

}  // namespace dhess
