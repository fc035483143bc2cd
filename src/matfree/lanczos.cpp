#include "dhess/matfree/lanczos.hpp"

#include <algorithm>
#include <cmath>

#include "dhess/linalg/probes.hpp"
#include "dhess/linalg/sharded.hpp"

namespace dhess {
namespace {

// Indices of the wanted Ritz values among m ascending ones.
std::vector<int64_t> wanted(int64_t m, int64_t bottom, int64_t top) {
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < std::min(bottom, m); ++i) idx.push_back(i);
  for (int64_t i = std::max<int64_t>(0, m - top); i < m; ++i)
    if (idx.empty() || i > idx.back()) idx.push_back(i);
  return idx;
}

// The recurrence so far: basis vectors (rows × (steps + 1)), α, β, and the tridiagonal's eigenpairs.
struct Krylov {
  std::vector<double> basis, alpha, beta, theta, y;
  int64_t m = 0;
};

// Whether every wanted Ritz pair meets the tolerance, or the space is invariant (β ≈ 0, every
// pair exact). Ranks agree: each computed the same tridiagonal, and the verdict is allreduced.
bool converged(Krylov& k, const LanczosOptions& o, MPI_Comm comm) {
  tridiagonal_eigen(k.alpha, k.beta, k.m, k.theta, k.y);
  const double scale = std::max(std::abs(k.theta.front()), std::abs(k.theta.back()));
  const double b = k.beta.back();
  int done = b <= 1e-14 * std::max(scale, 1e-300) ? 1 : 0;
  if (!done) {
    done = 1;
    for (int64_t i : wanted(k.m, o.bottom, o.top))
      if (b * std::abs(k.y[i * k.m + (k.m - 1)]) > o.tolerance * scale) done = 0;
  }
  MPI_Allreduce(MPI_IN_PLACE, &done, 1, MPI_INT, MPI_MIN, comm);
  return done != 0;
}

Krylov run_recurrence(const ShardedOperator& op, const RowShard& shard, const LanczosOptions& o, MPI_Comm comm) {
  const int64_t rows = shard.rows();
  const int64_t m_max = std::min<int64_t>(std::max<int64_t>(o.max_steps, 1), shard.n);
  Krylov k;
  k.basis.assign(static_cast<std::size_t>(rows * (m_max + 1)), 0.0);
  double* v0 = k.basis.data();
  for (int64_t i = 0; i < rows; ++i) v0[i] = uniform(o.seed, 7, static_cast<uint64_t>(shard.begin + i));
  if (o.start_filter) o.start_filter(v0);
  const double nv = norm(v0, rows, comm);
  for (int64_t i = 0; i < rows; ++i) v0[i] /= nv;
  std::vector<double> w(static_cast<std::size_t>(std::max<int64_t>(rows, 1)));
  for (int64_t j = 0; j < m_max; ++j) {
    const double* vj = k.basis.data() + j * rows;
    op(vj, 1, w.data());
    double a = 0;
    for (int64_t i = 0; i < rows; ++i) a += vj[i] * w[i];
    k.alpha.push_back(allsum(a, comm));
    // Full reorthogonalization against every basis vector, twice ("twice is enough").
    for (int pass = 0; pass < 2; ++pass)
      subtract(k.basis, rows, j + 1, project(k.basis, rows, j + 1, w.data(), comm), w.data());
    const double b = norm(w.data(), rows, comm);
    k.beta.push_back(b);
    k.m = j + 1;
    const bool check = k.m == m_max || k.m >= o.top + o.bottom + 2 || b == 0;
    if (check && (converged(k, o, comm) || k.m == m_max)) return k;
    double* next = k.basis.data() + (j + 1) * rows;
    for (int64_t i = 0; i < rows; ++i) next[i] = w[i] / b;
  }
  return k;
}

}  // namespace

LanczosResult lanczos_extremes(const ShardedOperator& op, const RowShard& shard, const LanczosOptions& o,
                               MPI_Comm comm) {
  Krylov k = run_recurrence(op, shard, o, comm);
  if (k.theta.size() != static_cast<std::size_t>(k.m)) tridiagonal_eigen(k.alpha, k.beta, k.m, k.theta, k.y);
  LanczosResult result;
  result.steps = k.m;
  result.norm_estimate = std::max(std::abs(k.theta.front()), std::abs(k.theta.back()));

  // Ritz vectors z = V y and their true residuals from one batched product.
  const int64_t rows = shard.rows(), m = k.m;
  const auto idx = wanted(m, o.bottom, o.top);
  const int64_t count = static_cast<int64_t>(idx.size());
  std::vector<double> ys(static_cast<std::size_t>(m * count));
  for (int64_t c = 0; c < count; ++c)
    std::copy(k.y.begin() + idx[c] * m, k.y.begin() + (idx[c] + 1) * m, ys.begin() + c * m);
  result.vectors = combine(k.basis, rows, m, ys, count);
  k.basis = std::vector<double>();
  std::vector<double> hz(result.vectors.size());
  op(result.vectors.data(), count, hz.data());
  std::vector<double> r2(static_cast<std::size_t>(count), 0.0);
  for (int64_t c = 0; c < count; ++c)
    for (int64_t i = 0; i < rows; ++i) {
      const double d = hz[c * rows + i] - k.theta[idx[c]] * result.vectors[c * rows + i];
      r2[c] += d * d;
    }
  allsum(r2, comm);
  for (int64_t c = 0; c < count; ++c) {
    RitzPair p;
    p.value = k.theta[idx[c]];
    p.residual = std::sqrt(r2[c]) / std::max(result.norm_estimate, 1e-300);
    p.converged = p.residual <= o.tolerance;
    result.pairs.push_back(p);
  }
  return result;
}

}  // namespace dhess
