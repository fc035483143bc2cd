#include "dhess/matrix_free.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "dhess/errors.hpp"
#include "dhess/lapack.hpp"

namespace dhess {
namespace {

// Random entries keyed by (seed, stream, global row): the same vectors on any rank count.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
double rademacher(uint64_t seed, uint64_t stream, uint64_t row) {
  return (mix(seed ^ mix(stream * 0x100000001b3ull + row)) & 1) ? 1.0 : -1.0;
}
double uniform(uint64_t seed, uint64_t stream, uint64_t row) {
  return static_cast<double>(mix(seed ^ mix(stream * 0x100000001b3ull + row)) >> 11) * 0x1.0p-53 - 0.5;
}

double allsum(double v, MPI_Comm comm) {
  double out = 0;
  check_mpi(MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_SUM, comm), "MPI_Allreduce");
  return out;
}
void allsum(std::vector<double>& v, MPI_Comm comm) {
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_DOUBLE, MPI_SUM, comm),
            "MPI_Allreduce");
}

int as_int(int64_t v) { return static_cast<int>(v); }

// c = Vᵀ w over the first `cols` columns of V (rows × ld-columns, column-major), summed over ranks.
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

// w -= V c over the first `cols` columns of V.
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

// Eigenvalues (ascending) and eigenvectors (column-major m×m) of the Lanczos tridiagonal.
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

// Indices of the wanted Ritz values among m ascending ones.
std::vector<int64_t> wanted(int64_t m, int64_t bottom, int64_t top) {
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < std::min(bottom, m); ++i) idx.push_back(i);
  for (int64_t i = std::max<int64_t>(0, m - top); i < m; ++i)
    if (idx.empty() || i > idx.back()) idx.push_back(i);
  return idx;
}

}  // namespace

RowShard RowShard::of(int64_t n, int rank, int size) {
  RowShard s;
  s.n = n;
  s.begin = n * rank / size;
  s.end = n * (rank + 1) / size;
  return s;
}

LanczosResult lanczos_extremes(const ShardedOperator& op, const RowShard& shard, const LanczosOptions& o,
                               MPI_Comm comm) {
  const int64_t rows = shard.rows();
  const int64_t m_max = std::min<int64_t>(std::max<int64_t>(o.max_steps, 1), shard.n);
  std::vector<double> basis(static_cast<std::size_t>(rows * (m_max + 1)), 0.0);
  std::vector<double> alpha, beta, theta, y;
  double* v0 = basis.data();
  for (int64_t i = 0; i < rows; ++i) v0[i] = uniform(o.seed, 7, static_cast<uint64_t>(shard.begin + i));
  double nv = norm(v0, rows, comm);
  for (int64_t i = 0; i < rows; ++i) v0[i] /= nv;

  LanczosResult result;
  std::vector<double> w(static_cast<std::size_t>(std::max<int64_t>(rows, 1)));
  int64_t m = 0;
  for (int64_t j = 0; j < m_max; ++j) {
    const double* vj = basis.data() + j * rows;
    op(vj, 1, w.data());
    double a = 0;
    for (int64_t i = 0; i < rows; ++i) a += vj[i] * w[i];
    a = allsum(a, comm);
    alpha.push_back(a);
    // Full reorthogonalization against every basis vector, twice ("twice is enough").
    for (int pass = 0; pass < 2; ++pass) subtract(basis, rows, j + 1, project(basis, rows, j + 1, w.data(), comm), w.data());
    const double b = norm(w.data(), rows, comm);
    beta.push_back(b);
    m = j + 1;
    const bool last = m == m_max;
    const bool check = last || m >= o.top + o.bottom + 2;
    if (check || b == 0) {
      tridiagonal_eigen(alpha, beta, m, theta, y);
      double scale = std::max(std::abs(theta.front()), std::abs(theta.back()));
      bool done = true;
      for (int64_t i : wanted(m, o.bottom, o.top))
        if (b * std::abs(y[i * m + (m - 1)]) > o.tolerance * scale) done = false;
      // An invariant subspace (b ≈ 0) makes every Ritz pair exact.
      if (done || b <= 1e-14 * std::max(scale, 1e-300) || last) break;
    }
    double* next = basis.data() + (j + 1) * rows;
    for (int64_t i = 0; i < rows; ++i) next[i] = w[i] / b;
  }
  if (theta.size() != static_cast<std::size_t>(m)) tridiagonal_eigen(alpha, beta, m, theta, y);
  result.steps = m;
  result.norm_estimate = std::max(std::abs(theta.front()), std::abs(theta.back()));

  // Ritz vectors z = V y and their true residuals from one batched product.
  auto idx = wanted(m, o.bottom, o.top);
  const int64_t k = static_cast<int64_t>(idx.size());
  std::vector<double> ys(static_cast<std::size_t>(m * k));
  for (int64_t c = 0; c < k; ++c) std::copy(y.begin() + idx[c] * m, y.begin() + (idx[c] + 1) * m, ys.begin() + c * m);
  result.vectors.assign(static_cast<std::size_t>(rows * k), 0.0);
  if (rows > 0) {
    const int mr = as_int(rows), mk = as_int(k), mm = as_int(m);
    const double one = 1, zero = 0;
    dgemm_("N", "N", &mr, &mk, &mm, &one, basis.data(), &mr, ys.data(), &mm, &zero, result.vectors.data(), &mr);
  }
  basis = std::vector<double>();
  std::vector<double> hz(result.vectors.size());
  op(result.vectors.data(), k, hz.data());
  std::vector<double> r2(static_cast<std::size_t>(k), 0.0);
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = 0; i < rows; ++i) {
      double d = hz[c * rows + i] - theta[idx[c]] * result.vectors[c * rows + i];
      r2[c] += d * d;
    }
  allsum(r2, comm);
  for (int64_t c = 0; c < k; ++c) {
    RitzPair p;
    p.value = theta[idx[c]];
    p.residual = std::sqrt(r2[c]) / std::max(result.norm_estimate, 1e-300);
    p.converged = p.residual <= o.tolerance;
    result.pairs.push_back(p);
  }
  return result;
}

std::vector<QuadratureNode> slq_nodes(const ShardedOperator& op, const RowShard& shard, int64_t probes, int64_t steps,
                                      bool reorthogonalize, uint64_t seed, MPI_Comm comm) {
  const int64_t rows = shard.rows();
  steps = std::min(steps, shard.n);
  const int64_t keep = reorthogonalize ? steps : 2;
  std::vector<std::vector<double>> basis(probes, std::vector<double>(static_cast<std::size_t>(rows * keep), 0.0));
  std::vector<std::vector<double>> alpha(probes), beta(probes);
  std::vector<bool> active(probes, true);
  std::vector<double> x(static_cast<std::size_t>(rows * probes)), w(x.size());
  for (int64_t p = 0; p < probes; ++p) {
    for (int64_t i = 0; i < rows; ++i)
      basis[p][i] = rademacher(seed, 1000 + p, static_cast<uint64_t>(shard.begin + i)) / std::sqrt(double(shard.n));
  }
  for (int64_t j = 0; j < steps; ++j) {
    const int64_t slot = reorthogonalize ? j : j % 2;
    for (int64_t p = 0; p < probes; ++p)
      std::copy(basis[p].begin() + slot * rows, basis[p].begin() + (slot + 1) * rows, x.begin() + p * rows);
    op(x.data(), probes, w.data());  // one batched product for all probes
    for (int64_t p = 0; p < probes; ++p) {
      if (!active[p]) continue;
      double* wp = w.data() + p * rows;
      const double* vj = basis[p].data() + slot * rows;
      double a = 0;
      for (int64_t i = 0; i < rows; ++i) a += vj[i] * wp[i];
      a = allsum(a, comm);
      alpha[p].push_back(a);
      if (reorthogonalize) {
        for (int pass = 0; pass < 2; ++pass)
          subtract(basis[p], rows, j + 1, project(basis[p], rows, j + 1, wp, comm), wp);
      } else {
        const double* vprev = basis[p].data() + ((j + 1) % 2) * rows;
        const double bprev = j > 0 ? beta[p].back() : 0.0;
        for (int64_t i = 0; i < rows; ++i) wp[i] -= a * vj[i] + bprev * vprev[i];
      }
      const double b = norm(wp, rows, comm);
      if (j + 1 == steps || b <= 1e-14 * std::abs(a) + 1e-300) {
        active[p] = false;
        continue;
      }
      beta[p].push_back(b);
      double* next = basis[p].data() + (reorthogonalize ? (j + 1) : (j + 1) % 2) * rows;
      for (int64_t i = 0; i < rows; ++i) next[i] = wp[i] / b;
    }
    if (std::none_of(active.begin(), active.end(), [](bool a) { return a; })) break;
  }
  std::vector<QuadratureNode> nodes;
  for (int64_t p = 0; p < probes; ++p) {
    const int64_t m = static_cast<int64_t>(alpha[p].size());
    std::vector<double> theta, y;
    tridiagonal_eigen(alpha[p], beta[p], m, theta, y);
    for (int64_t i = 0; i < m; ++i) nodes.push_back({static_cast<int>(p), theta[i], y[i * m] * y[i * m]});
  }
  return nodes;
}

Density smooth_density(const std::vector<QuadratureNode>& nodes, int64_t probes, int points, double sigma_rel) {
  Density d;
  if (nodes.empty()) return d;
  double lo = nodes.front().node, hi = lo;
  for (const auto& q : nodes) lo = std::min(lo, q.node), hi = std::max(hi, q.node);
  d.sigma = std::max(sigma_rel * (hi - lo), 1e-12 * std::max(std::abs(lo), std::abs(hi)) + 1e-300);
  const double a = lo - 5 * d.sigma, b = hi + 5 * d.sigma;
  const double norm = 1.0 / (static_cast<double>(probes) * d.sigma * std::sqrt(2 * M_PI));
  for (int i = 0; i < points; ++i) {
    const double t = a + (b - a) * i / (points - 1);
    double s = 0;
    for (const auto& q : nodes) s += q.weight * std::exp(-0.5 * std::pow((t - q.node) / d.sigma, 2));
    d.grid.push_back(t);
    d.density.push_back(s * norm);
  }
  return d;
}

TraceEstimate estimate_trace(const ShardedOperator& op, const RowShard& shard, int64_t probes, uint64_t seed,
                             MPI_Comm comm) {
  const int64_t rows = shard.rows();
  TraceEstimate t;
  t.probes = probes;
  auto fill = [&](std::vector<double>& v, int64_t k, uint64_t stream) {
    v.assign(static_cast<std::size_t>(rows * k), 0.0);
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < rows; ++i)
        v[c * rows + i] = rademacher(seed, stream + c, static_cast<uint64_t>(shard.begin + i));
  };
  auto quadratic_forms = [&](const std::vector<double>& v, const std::vector<double>& hv, int64_t k) {
    std::vector<double> q(static_cast<std::size_t>(k), 0.0);
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < rows; ++i) q[c] += v[c * rows + i] * hv[c * rows + i];
    allsum(q, comm);
    return q;
  };
  auto mean_and_stderr = [](const std::vector<double>& q, double& mean, double& se) {
    const double k = static_cast<double>(q.size());
    mean = std::accumulate(q.begin(), q.end(), 0.0) / k;
    double var = 0;
    for (double v : q) var += (v - mean) * (v - mean);
    se = q.size() > 1 ? std::sqrt(var / (k - 1) / k) : std::numeric_limits<double>::infinity();
  };

  // Hutchinson.
  std::vector<double> v, hv;
  fill(v, probes, 2000);
  hv.resize(v.size());
  op(v.data(), probes, hv.data());
  mean_and_stderr(quadratic_forms(v, hv, probes), t.hutchinson, t.hutchinson_stderr);

  // Hutch++ with the same number of products: s sketch, s exact, g remainder.
  const int64_t s = std::max<int64_t>(1, probes / 3), g = std::max<int64_t>(2, probes - 2 * s);
  std::vector<double> sketch, q;
  fill(sketch, s, 3000);
  q.resize(sketch.size());
  op(sketch.data(), s, q.data());
  // Orthonormalize the columns of H·S (classical Gram-Schmidt, twice).
  int64_t rank = 0;
  std::vector<double> qbasis;
  for (int64_t c = 0; c < s; ++c) {
    double* col = q.data() + c * rows;
    for (int pass = 0; pass < 2; ++pass) subtract(qbasis, rows, rank, project(qbasis, rows, rank, col, comm), col);
    double nc = norm(col, rows, comm);
    if (nc <= 1e-12) continue;
    for (int64_t i = 0; i < rows; ++i) col[i] /= nc;
    qbasis.insert(qbasis.end(), col, col + rows);
    ++rank;
  }
  std::vector<double> hq(qbasis.size());
  if (rank > 0) op(qbasis.data(), rank, hq.data());
  double exact = 0;
  for (double f : quadratic_forms(qbasis, hq, rank)) exact += f;
  std::vector<double> gv, hg;
  fill(gv, g, 4000);
  for (int64_t c = 0; c < g; ++c) {
    double* col = gv.data() + c * rows;
    subtract(qbasis, rows, rank, project(qbasis, rows, rank, col, comm), col);
  }
  hg.resize(gv.size());
  op(gv.data(), g, hg.data());
  double rest = 0;
  mean_and_stderr(quadratic_forms(gv, hg, g), rest, t.hutchpp_stderr);
  t.hutchpp = exact + rest;
  return t;
}

void estimate_diagonal(const ShardedOperator& op, const RowShard& shard, int64_t probes, uint64_t seed,
                       std::vector<double>& diagonal, std::vector<double>& stderr_out, MPI_Comm) {
  const int64_t rows = shard.rows();
  const int64_t batch = std::min<int64_t>(probes, 16);
  std::vector<double> sum(static_cast<std::size_t>(rows), 0.0), sum2(sum.size(), 0.0);
  for (int64_t p0 = 0; p0 < probes; p0 += batch) {
    const int64_t k = std::min(batch, probes - p0);
    std::vector<double> v(static_cast<std::size_t>(rows * k)), hv(v.size());
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < rows; ++i)
        v[c * rows + i] = rademacher(seed, 5000 + p0 + c, static_cast<uint64_t>(shard.begin + i));
    op(v.data(), k, hv.data());
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < rows; ++i) {
        double e = v[c * rows + i] * hv[c * rows + i];
        sum[i] += e;
        sum2[i] += e * e;
      }
  }
  const double m = static_cast<double>(probes);
  diagonal.resize(sum.size());
  stderr_out.resize(sum.size());
  for (int64_t i = 0; i < rows; ++i) {
    diagonal[i] = sum[i] / m;
    double var = probes > 1 ? std::max(0.0, (sum2[i] - m * diagonal[i] * diagonal[i]) / (m - 1)) : 0.0;
    stderr_out[i] = std::sqrt(var / m);
  }
}

}  // namespace dhess
