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

std::vector<double> column_norms(const double* w, int64_t rows, int64_t k, MPI_Comm comm) {
  std::vector<double> s(static_cast<std::size_t>(k), 0.0);
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = 0; i < rows; ++i) s[c] += w[c * rows + i] * w[c * rows + i];
  allsum(s, comm);
  for (double& v : s) v = std::sqrt(v);
  return s;
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

std::vector<double> inner_products(const std::vector<double>& q, int64_t rows, int64_t rank, const double* w, int64_t k,
                                   MPI_Comm comm) {
  std::vector<double> c(static_cast<std::size_t>(rank * k), 0.0);
  if (rows > 0 && rank > 0 && k > 0) {
    const int m = as_int(rows), r = as_int(rank), kk = as_int(k);
    const double one = 1, zero = 0;
    dgemm_("T", "N", &r, &kk, &m, &one, q.data(), &m, w, &m, &zero, c.data(), &r);
  }
  allsum(c, comm);
  return c;
}

namespace {

// block -= Q (Qᵀ block): the basis out of the block's k columns at once (BLAS 3).
void project_out_basis(const std::vector<double>& q, int64_t rows, int64_t rank, std::vector<double>& block, int64_t k,
                       MPI_Comm comm) {
  const std::vector<double> c = inner_products(q, rows, rank, block.data(), k, comm);
  if (rows == 0 || rank == 0 || k == 0) return;
  const int m = as_int(rows), r = as_int(rank), kk = as_int(k);
  const double minus = -1, one = 1;
  dgemm_("N", "N", &m, &kk, &r, &minus, q.data(), &m, c.data(), &r, &one, block.data(), &m);
}

// BᵀB's lower triangle (dsyrk: half a dgemm's flops), summed over the ranks.
std::vector<double> gram_lower(const std::vector<double>& b, int64_t rows, int64_t k, MPI_Comm comm) {
  std::vector<double> g(static_cast<std::size_t>(k * k), 0.0);
  if (rows > 0 && k > 0) {
    const int m = as_int(rows), kk = as_int(k);
    const double one = 1, zero = 0;
    dsyrk_("L", "T", &kk, &m, &one, b.data(), &m, &zero, g.data(), &kk);
  }
  allsum(g, comm);
  return g;
}

// SVQB (Stathopoulos and Wu 2002): the block's k columns replaced by an orthonormal basis of the
// directions in which it is longer than `least` and than 1e-7 of its longest (G = BᵀB = V Λ Vᵀ,
// B ← B V Λ^-1/2 over those λ; what Λ cannot resolve, below 1e-7 of the longest, is rounding).
// Returns the directions kept; `shortest` is the least length kept. Collective.
int64_t svqb(std::vector<double>& block, int64_t rows, int64_t k, double least, double& shortest, MPI_Comm comm) {
  std::vector<double> gram = gram_lower(block, rows, k, comm);
  std::vector<double> lambda, v;
  symmetric_eigen(std::move(gram), k, lambda, v);
  const double floor = std::max(least * least, 1e-14 * std::max(lambda.empty() ? 0.0 : lambda.back(), 0.0));
  std::vector<double> w;  // k × kept: the kept eigenvectors, each over its length
  shortest = 0;
  for (int64_t j = k - 1; j >= 0; --j) {
    if (!(lambda[j] > floor)) break;
    const double length = std::sqrt(lambda[j]);
    for (int64_t i = 0; i < k; ++i) w.push_back(v[j * k + i] / length);
    shortest = length;
  }
  const auto kept = static_cast<int64_t>(w.size()) / std::max<int64_t>(k, 1);
  block = combine(block, rows, k, w, kept);
  return kept;
}

}  // namespace

int64_t extend_orthonormal_basis(std::vector<double>& q, int64_t rows, int64_t& rank, std::vector<double>& block,
                                 int64_t k, double drop, MPI_Comm comm) {
  const std::vector<double> lengths = column_norms(block.data(), rows, k, comm);
  const double longest = lengths.empty() ? 0.0 : *std::max_element(lengths.begin(), lengths.end());
  // The basis out of the block, then the block orthonormalized within itself, where what is left of
  // a column below `drop` of the block's longest is rounding; twice ("twice is enough": the second
  // pass takes out what the first's rounding left of the basis, amplified by the normalization),
  // and again while a direction lost more than a third of its length to the basis. One projection
  // before the first drop lets the rounding of QᵀY through where a column lies almost in the
  // basis's span: a few directions of noise join (3 beside 657 on a spectrum falling to 1e-12,
  // against a second projection before the drop), whose Ritz values are zero and dropped; the
  // second projection would cost a fifth of the orthonormalization.
  int64_t kept = k;
  double least = drop * longest;
  for (int pass = 0; pass < 4 && kept > 0; ++pass) {
    project_out_basis(q, rows, rank, block, kept, comm);
    double shortest = 0;
    kept = svqb(block, rows, kept, least, shortest, comm);
    if (pass > 0 && shortest > 0.70710678) break;
    least = 1e-7;  // block is orthonormal now: lengths are fractions of one
  }
  q.insert(q.end(), block.begin(), block.begin() + rows * kept);
  rank += kept;
  return kept;
}

std::vector<double> symmetric_inner_products(const std::vector<double>& q, int64_t rows, int64_t rank,
                                             const std::vector<double>& w, MPI_Comm comm) {
  constexpr int64_t kPanel = 256;
  std::vector<double> c(static_cast<std::size_t>(rank * rank), 0.0);
  const int m = as_int(rows), r = as_int(rank);
  const double one = 1, zero = 0;
  for (int64_t first = 0; rows > 0 && first < rank; first += kPanel) {
    const int below = as_int(rank - first), width = as_int(std::min(kPanel, rank - first));
    dgemm_("T", "N", &below, &width, &m, &one, q.data() + first * rows, &m, w.data() + first * rows, &m, &zero,
           c.data() + first * rank + first, &r);
  }
  allsum(c, comm);
  return c;
}

namespace {

// LAPACK dsyevd on the lower triangle of the m × m matrix a: the eigenvalues (ascending), and with
// jobz "V" the eigenvectors in place of a.
std::vector<double> dsyevd(const char* jobz, std::vector<double>& a, int64_t m) {
  std::vector<double> values(static_cast<std::size_t>(m), 0.0);
  if (m == 0) return values;
  const int mm = as_int(m);
  int info = 0, lwork = -1, liwork = -1, iquery = 0;
  double query = 0;
  dsyevd_(jobz, "L", &mm, a.data(), &mm, values.data(), &query, &lwork, &iquery, &liwork, &info);
  lwork = static_cast<int>(query) + 1;
  liwork = iquery + 1;
  std::vector<double> work(static_cast<std::size_t>(lwork));
  std::vector<int> iwork(static_cast<std::size_t>(liwork));
  dsyevd_(jobz, "L", &mm, a.data(), &mm, values.data(), work.data(), &lwork, iwork.data(), &liwork, &info);
  if (info != 0) throw InternalError("dsyevd failed on the projected matrix (info = " + std::to_string(info) + ")");
  return values;
}

}  // namespace

std::vector<double> symmetric_eigenvalues(std::vector<double> a, int64_t m) { return dsyevd("N", a, m); }

void symmetric_eigen(std::vector<double> a, int64_t m, std::vector<double>& values, std::vector<double>& vectors) {
  values = dsyevd("V", a, m);
  vectors = std::move(a);
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

void combine_in_place(std::vector<double>& v, int64_t rows, int64_t m, const std::vector<double>& y, int64_t k) {
  constexpr int64_t kRowsPerBlock = 4096;
  if (rows == 0 || m == 0 || k == 0) return;
  std::vector<double> block(static_cast<std::size_t>(std::min(rows, kRowsPerBlock) * k));
  const int ld = as_int(rows), mk = as_int(k), mm = as_int(m);
  const double one = 1, zero = 0;
  for (int64_t first = 0; first < rows; first += kRowsPerBlock) {
    const int count = as_int(std::min(kRowsPerBlock, rows - first));
    dgemm_("N", "N", &count, &mk, &mm, &one, v.data() + first, &ld, y.data(), &mm, &zero, block.data(), &count);
    for (int64_t j = 0; j < k; ++j)
      std::copy(block.begin() + j * count, block.begin() + (j + 1) * count, v.begin() + j * rows + first);
  }
}

}  // namespace dhess
