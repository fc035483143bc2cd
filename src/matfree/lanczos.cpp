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

// The recurrence so far. T = Vᵀ H V is tridiagonal until the first restart; after one it begins
// with an arrowhead (the kept Ritz values on its diagonal, their couplings to the residual in one
// row and column) and goes on tridiagonal.
struct Krylov {
  int64_t rows = 0, capacity = 0;  // basis vectors held at most; one slot more holds the next
  std::vector<double> basis;       // rows × (capacity + 1), column-major
  std::vector<double> alpha;       // T's diagonal
  std::vector<double> beta;        // beta[i] couples vectors i and i + 1; the last, the residual's norm
  std::vector<double> arrow;       // couplings of the kept Ritz vectors to vector `kept`
  int64_t m = 0, kept = 0;         // vectors in T; Ritz vectors the last restart kept
  std::vector<double> theta, y;    // T's eigenpairs
  int64_t steps = 0, restarts = 0;
  double* vector(int64_t j) { return basis.data() + j * rows; }
};

void ritz(Krylov& k) {
  if (k.restarts == 0) {
    tridiagonal_eigen(k.alpha, k.beta, k.m, k.theta, k.y);
    return;
  }
  std::vector<double> a(static_cast<std::size_t>(k.m * k.m), 0.0);
  auto at = [&](int64_t i, int64_t j) -> double& { return a[j * k.m + i]; };
  for (int64_t i = 0; i < k.m; ++i) at(i, i) = k.alpha[i];
  for (int64_t c = 0; c < k.kept; ++c) at(c, k.kept) = at(k.kept, c) = k.arrow[c];
  for (int64_t i = k.kept; i + 1 < k.m; ++i) at(i, i + 1) = at(i + 1, i) = k.beta[i];
  symmetric_eigen(std::move(a), k.m, k.theta, k.y);
}

// Whether every wanted Ritz pair meets the tolerance, or the space is invariant (β ≈ 0, every
// pair exact). Ranks agree: each computed the same T, and the verdict is allreduced.
bool converged(Krylov& k, const LanczosOptions& o, MPI_Comm comm) {
  ritz(k);
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

// One product: the newest vector's α, the residual orthogonalized against the whole basis (twice:
// "twice is enough"), its norm β, and where β ≠ 0 the residual normalized into the next slot.
void step(const ShardedOperator& op, Krylov& k, std::vector<double>& w, MPI_Comm comm) {
  const int64_t j = k.m;
  const double* v = k.vector(j);
  op(v, 1, w.data());
  ++k.steps;
  double a = 0;
  for (int64_t i = 0; i < k.rows; ++i) a += v[i] * w[i];
  k.alpha.push_back(allsum(a, comm));
  for (int pass = 0; pass < 2; ++pass)
    subtract(k.basis, k.rows, j + 1, project(k.basis, k.rows, j + 1, w.data(), comm), w.data());
  const double b = norm(w.data(), k.rows, comm);
  k.beta.push_back(b);
  k.m = j + 1;
  if (b == 0) return;
  double* next = k.vector(k.m);
  for (int64_t i = 0; i < k.rows; ++i) next[i] = w[i] / b;
}

// Thick restart of a full basis: the wanted Ritz vectors and their nearest neighbours (half the
// room left, split between the ends asked for) replace it, the residual follows them, and
// H V = V T + β v eᵀ holds on with T the arrowhead of the kept values and couplings β·y_last.
void restart(Krylov& k, const LanczosOptions& o) {
  const int64_t extra = std::max<int64_t>((k.capacity - o.top - o.bottom) / 2, 1);
  const int64_t below = o.top == 0 ? extra : o.bottom == 0 ? 0 : extra / 2;
  const auto keep = wanted(k.m, o.bottom + below, o.top + extra - below);
  const auto count = static_cast<int64_t>(keep.size());
  std::vector<double> yk(static_cast<std::size_t>(k.m * count));
  k.arrow.assign(static_cast<std::size_t>(count), 0.0);
  for (int64_t c = 0; c < count; ++c) {
    std::copy(k.y.begin() + keep[c] * k.m, k.y.begin() + (keep[c] + 1) * k.m, yk.begin() + c * k.m);
    k.arrow[c] = k.beta.back() * k.y[keep[c] * k.m + k.m - 1];
  }
  combine_in_place(k.basis, k.rows, k.m, yk, count);
  std::copy(k.vector(k.m), k.vector(k.m) + k.rows, k.vector(count));
  k.alpha.resize(static_cast<std::size_t>(count));
  for (int64_t c = 0; c < count; ++c) k.alpha[c] = k.theta[keep[c]];
  k.beta.assign(static_cast<std::size_t>(count), 0.0);
  k.m = k.kept = count;
  ++k.restarts;
}

Krylov run_recurrence(const ShardedOperator& op, const RowShard& shard, const LanczosOptions& o, MPI_Comm comm) {
  const int64_t max_steps = std::max<int64_t>(o.max_steps, 1);
  Krylov k;
  k.rows = shard.rows();
  k.capacity = std::min({o.basis > 0 ? o.basis : max_steps, max_steps, shard.n});
  k.basis.assign(static_cast<std::size_t>(k.rows * (k.capacity + 1)), 0.0);
  double* v0 = k.vector(0);
  for (int64_t i = 0; i < k.rows; ++i) v0[i] = uniform(o.seed, 7, static_cast<uint64_t>(shard.begin + i));
  if (o.start_filter) o.start_filter(v0);
  const double nv = norm(v0, k.rows, comm);
  for (int64_t i = 0; i < k.rows; ++i) v0[i] /= nv;
  std::vector<double> w(static_cast<std::size_t>(std::max<int64_t>(k.rows, 1)));
  // A restart must leave room for a new vector beside the kept ones.
  const bool restartable = k.capacity >= o.top + o.bottom + 2;
  for (;;) {
    step(op, k, w, comm);
    const bool full = k.m == k.capacity, out = k.steps >= max_steps;
    const bool check = full || out || k.m >= o.top + o.bottom + 2 || k.beta.back() == 0;
    if (check && (converged(k, o, comm) || out || (full && !restartable))) return k;
    if (full) restart(k, o);
  }
}

}  // namespace

LanczosResult lanczos_extremes(const ShardedOperator& op, const RowShard& shard, const LanczosOptions& o,
                               MPI_Comm comm) {
  Krylov k = run_recurrence(op, shard, o, comm);
  LanczosResult result;
  result.steps = k.steps;
  result.basis = k.capacity;
  result.restarts = k.restarts;
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
