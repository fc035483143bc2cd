#include "dhess/matfree/density.hpp"

#include <algorithm>
#include <cmath>

#include "dhess/linalg/probes.hpp"
#include "dhess/linalg/sharded.hpp"

namespace dhess {

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
      basis[p][i] = slq_start(seed, static_cast<uint64_t>(p), static_cast<uint64_t>(shard.begin + i), shard.n);
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

}  // namespace dhess
