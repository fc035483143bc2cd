#include "dhess/matfree/trace.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

#include "dhess/linalg/probes.hpp"
#include "dhess/linalg/sharded.hpp"

namespace dhess {
namespace {

// k Rademacher probes of one stream, this rank's rows.
std::vector<double> rademacher_block(const RowShard& shard, int64_t k, uint64_t seed, uint64_t stream) {
  const int64_t rows = shard.rows();
  std::vector<double> v(static_cast<std::size_t>(rows * k));
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = 0; i < rows; ++i)
      v[c * rows + i] = rademacher(seed, stream + c, static_cast<uint64_t>(shard.begin + i));
  return v;
}

// vᵢᵀ(Hv)ᵢ for each of k columns, summed over ranks.
std::vector<double> quadratic_forms(const std::vector<double>& v, const std::vector<double>& hv, int64_t rows,
                                    int64_t k, MPI_Comm comm) {
  std::vector<double> q(static_cast<std::size_t>(k), 0.0);
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = 0; i < rows; ++i) q[c] += v[c * rows + i] * hv[c * rows + i];
  allsum(q, comm);
  return q;
}

void mean_and_stderr(const std::vector<double>& q, double& mean, double& se) {
  const double k = static_cast<double>(q.size());
  mean = std::accumulate(q.begin(), q.end(), 0.0) / k;
  double var = 0;
  for (double v : q) var += (v - mean) * (v - mean);
  se = q.size() > 1 ? std::sqrt(var / (k - 1) / k) : std::numeric_limits<double>::infinity();
}

std::vector<double> apply(const ShardedOperator& op, const std::vector<double>& v, int64_t k) {
  std::vector<double> hv(v.size());
  if (k > 0) op(v.data(), k, hv.data());
  return hv;
}

// vᵀHv for `count` Rademacher probes of one stream, `chunk` of them (with their products) held at a
// time; `prepare` may change each chunk's probes before their products. The same forms whatever
// the chunk: probe c is stream + c's.
std::vector<double> probe_forms(const ShardedOperator& op, const RowShard& shard, int64_t count, int64_t chunk,
                                uint64_t seed, uint64_t stream,
                                const std::function<void(std::vector<double>&, int64_t)>& prepare, MPI_Comm comm) {
  std::vector<double> forms;
  chunk = std::max<int64_t>(1, chunk);
  for (int64_t first = 0; first < count; first += chunk) {
    const int64_t k = std::min(chunk, count - first);
    std::vector<double> v = rademacher_block(shard, k, seed, stream + static_cast<uint64_t>(first));
    if (prepare) prepare(v, k);
    const std::vector<double> q = quadratic_forms(v, apply(op, v, k), shard.rows(), k, comm);
    forms.insert(forms.end(), q.begin(), q.end());
  }
  return forms;
}

}  // namespace

TraceEstimate hutchpp_trace(const ShardedOperator& op, const RowShard& shard, int64_t products, int64_t chunk,
                            uint64_t seed, MPI_Comm comm) {
  const int64_t rows = shard.rows();
  const int64_t s = std::max<int64_t>(1, products / 3), g = std::max<int64_t>(2, products - 2 * s);
  std::vector<double> y = apply(op, rademacher_block(shard, s, seed, kHutchppSketchStream), s);
  int64_t rank = 0;
  std::vector<double> q;
  extend_orthonormal_basis(q, rows, rank, y, s, 1e-12, comm);
  y = std::vector<double>();
  double exact = 0;
  for (double f : quadratic_forms(q, apply(op, q, rank), rows, rank, comm)) exact += f;
  auto deflate = [&](std::vector<double>& probes, int64_t k) {
    for (int64_t c = 0; c < k; ++c) {
      double* col = probes.data() + c * rows;
      subtract(q, rows, rank, project(q, rows, rank, col, comm), col);
    }
  };
  TraceEstimate t;
  mean_and_stderr(probe_forms(op, shard, g, chunk, seed, kHutchppStream, deflate, comm), t.value, t.stderr_value);
  t.value += exact;
  t.products = s + rank + g;
  return t;
}

TraceEstimate hutchinson_trace(const ShardedOperator& op, const RowShard& shard, int64_t products, int64_t chunk,
                               uint64_t seed, MPI_Comm comm) {
  TraceEstimate t;
  t.products = products;
  mean_and_stderr(probe_forms(op, shard, products, chunk, seed, kHutchinsonStream, {}, comm), t.value, t.stderr_value);
  return t;
}

void estimate_diagonal(const ShardedOperator& op, const RowShard& shard, int64_t probes, uint64_t seed,
                       std::vector<double>& diagonal, std::vector<double>& stderr_out, MPI_Comm comm,
                       const RowGroups* groups, std::vector<TraceEstimate>* group_traces) {
  const int64_t rows = shard.rows();
  const int64_t batch = std::min<int64_t>(probes, 16);
  const int count = groups ? groups->count : 0;
  std::vector<double> sum(static_cast<std::size_t>(rows), 0.0), sum2(sum.size(), 0.0);
  std::vector<double> group_sum(static_cast<std::size_t>(count), 0.0), group_sum2(group_sum.size(), 0.0);
  for (int64_t p0 = 0; p0 < probes; p0 += batch) {
    const int64_t k = std::min(batch, probes - p0);
    std::vector<double> v(static_cast<std::size_t>(rows * k)), hv(v.size());
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < rows; ++i)
        v[c * rows + i] = rademacher(seed, kDiagonalStream + p0 + c, static_cast<uint64_t>(shard.begin + i));
    op(v.data(), k, hv.data());
    std::vector<double> probe_sums(static_cast<std::size_t>(k * count), 0.0);
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < rows; ++i) {
        double e = v[c * rows + i] * hv[c * rows + i];
        sum[i] += e;
        sum2[i] += e * e;
        if (count > 0 && groups->of_row[i] >= 0) probe_sums[c * count + groups->of_row[i]] += e;
      }
    if (count == 0) continue;
    allsum(probe_sums, comm);
    for (int64_t c = 0; c < k; ++c)
      for (int g = 0; g < count; ++g) {
        const double e = probe_sums[c * count + g];
        group_sum[g] += e;
        group_sum2[g] += e * e;
      }
  }
  const double m = static_cast<double>(probes);
  auto mean_and_error = [&](double s, double s2, double& mean, double& error) {
    mean = s / m;
    const double var = probes > 1 ? std::max(0.0, (s2 - m * mean * mean) / (m - 1)) : 0.0;
    error = std::sqrt(var / m);
  };
  diagonal.resize(sum.size());
  stderr_out.resize(sum.size());
  for (int64_t i = 0; i < rows; ++i) mean_and_error(sum[i], sum2[i], diagonal[i], stderr_out[i]);
  if (!group_traces) return;
  group_traces->assign(static_cast<std::size_t>(count), {});
  for (int g = 0; g < count; ++g) {
    TraceEstimate& t = (*group_traces)[g];
    mean_and_error(group_sum[g], group_sum2[g], t.value, t.stderr_value);
    t.products = probes;
  }
}

}  // namespace dhess
