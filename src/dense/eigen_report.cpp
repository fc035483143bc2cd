#include "dhess/dense/eigen_report.hpp"

#include <algorithm>
#include <cmath>

#include "dhess/core/collective.hpp"
#include "dhess/report/summary.hpp"

namespace dhess {

using json = nlohmann::json;

namespace {

// Columns `indices` of a block-cyclic matrix, on every rank (small counts only).
template <typename T>
std::vector<std::vector<double>> gather_columns(const Rank& r, const BlockCyclicMatrix<T>& z,
                                                const std::vector<int64_t>& indices) {
  const int64_t n = z.rows();
  std::vector<double> local(indices.size() * n, 0.0), all(indices.size() * n, 0.0);
  for (std::size_t s = 0; s < indices.size(); ++s) {
    if (z.col_axis().owner(indices[s]) != z.my_col()) continue;
    int64_t lj = z.col_axis().local(indices[s]);
    for (int64_t li = 0; li < z.local_rows(); ++li) local[s * n + z.global_row(li)] = z.at_local(li, lj);
  }
  MPI_Allreduce(local.data(), all.data(), static_cast<int>(all.size()), MPI_DOUBLE, MPI_SUM, r.comm);
  std::vector<std::vector<double>> out;
  for (std::size_t s = 0; s < indices.size(); ++s) out.emplace_back(all.begin() + s * n, all.begin() + (s + 1) * n);
  return out;
}

}  // namespace

json eigenvalue_summary(const std::vector<double>& v, const EigenRequest& request, double relative_zero) {
  json eigen = to_json(eigen_stats(v, relative_zero));
  eigen["count"] = v.size();
  eigen["request"] = request.text();
  json top = json::array(), bottom = json::array();
  for (int64_t i = static_cast<int64_t>(v.size()) - 1; i >= std::max<int64_t>(0, v.size() - 10); --i)
    top.push_back(v[i]);
  for (std::size_t i = 0; i < std::min<std::size_t>(10, v.size()); ++i) bottom.push_back(v[i]);
  eigen["top"] = top;
  eigen["bottom"] = bottom;
  eigen["zero_tolerance_definition"] =
      std::string("|lambda| <= ") + (relative_zero == 1e-8 ? "1e-8" : "1e-4") + " * max|lambda| counts as near zero";
  return eigen;
}

template <typename T>
json self_check(const Rank& r, HvpEngine& engine, const Spectrum<T>& s, double norm) {
  const int64_t m = static_cast<int64_t>(s.values.size());
  std::vector<int64_t> idx;
  for (int64_t i : {m - 1, int64_t(0), m - 2, m / 2})
    if (i >= 0 && i < m && std::find(idx.begin(), idx.end(), i) == idx.end()) idx.push_back(i);
  std::vector<int64_t> columns;
  for (auto i : idx) columns.push_back(s.first_column + i);
  auto zs = gather_columns(r, *s.vectors, columns);
  const int64_t n = engine.n();
  std::vector<double> residual(idx.size(), 0.0), all(idx.size(), 0.0);
  run_collectively(r.comm, [&] {
    for (std::size_t k = 0; k < idx.size(); ++k) {
      if (static_cast<int>(k % r.size) != r.rank) continue;
      std::vector<double> hz(n);
      engine.apply(zs[k].data(), 1, hz.data());
      double sq = 0;
      for (int64_t i = 0; i < n; ++i) sq += std::pow(hz[i] - s.values[idx[k]] * zs[k][i], 2);
      residual[k] = std::sqrt(sq) / std::max(norm, 1e-300);
    }
  });
  MPI_Allreduce(residual.data(), all.data(), static_cast<int>(all.size()), MPI_DOUBLE, MPI_MAX, r.comm);
  double ortho = 0;
  for (std::size_t a = 0; a < zs.size(); ++a)
    for (std::size_t b = 0; b <= a; ++b) {
      double dot = 0;
      for (int64_t i = 0; i < n; ++i) dot += zs[a][i] * zs[b][i];
      ortho = std::max(ortho, std::abs(dot - (a == b ? 1.0 : 0.0)));
    }
  json pairs = json::array();
  for (std::size_t k = 0; k < idx.size(); ++k)
    pairs.push_back({{"index", idx[k]}, {"eigenvalue", s.values[idx[k]]}, {"residual", all[k]}});
  return {{"pairs", pairs},
          {"max_residual", *std::max_element(all.begin(), all.end())},
          {"orthogonality", ortho},
          {"residual_definition", "||H z - lambda z||_2 / max|lambda|, H z from a fresh Hessian-vector product"}};
}

template <typename T>
std::vector<double> parameter_shares(const Rank& r, const BlockCyclicMatrix<T>& z, int64_t first, int64_t m,
                                     const ParameterLayout& layout) {
  const std::size_t np = layout.parameters().size();
  std::vector<std::size_t> owner(z.local_rows());
  for (int64_t li = 0; li < z.local_rows(); ++li) owner[li] = layout.owner_of(z.global_row(li));
  std::vector<double> local(m * np, 0.0), total(m * np, 0.0);
  for (int64_t lj = 0; lj < z.local_cols(); ++lj) {
    int64_t j = z.global_col(lj) - first;
    if (j < 0 || j >= m) continue;
    for (int64_t li = 0; li < z.local_rows(); ++li) {
      double v = z.at_local(li, lj);
      local[j * np + owner[li]] += v * v;
    }
  }
  MPI_Allreduce(local.data(), total.data(), static_cast<int>(total.size()), MPI_DOUBLE, MPI_SUM, r.comm);
  return total;
}

json shares_json(const std::vector<double>& shares, const std::vector<double>& values, const ParameterLayout& layout,
                 int64_t few) {
  const std::size_t np = layout.parameters().size();
  const int64_t m = static_cast<int64_t>(values.size());
  auto entry = [&](int64_t i) {
    json by_param = json::object();
    for (std::size_t p = 0; p < np; ++p) by_param[layout.parameters()[p].name] = shares[i * np + p];
    return json{{"index", i}, {"eigenvalue", values[i]}, {"share", by_param}};
  };
  json top = json::array(), bottom = json::array();
  for (int64_t i = m - 1; i >= std::max<int64_t>(0, m - few); --i) top.push_back(entry(i));
  for (int64_t i = 0; i < std::min(few, m); ++i) bottom.push_back(entry(i));
  return {{"top", top}, {"bottom", bottom}};
}

template json self_check<double>(const Rank&, HvpEngine&, const Spectrum<double>&, double);
template json self_check<float>(const Rank&, HvpEngine&, const Spectrum<float>&, double);
template std::vector<double> parameter_shares<double>(const Rank&, const BlockCyclicMatrix<double>&, int64_t, int64_t,
                                                      const ParameterLayout&);
template std::vector<double> parameter_shares<float>(const Rank&, const BlockCyclicMatrix<float>&, int64_t, int64_t,
                                                     const ParameterLayout&);

}  // namespace dhess
