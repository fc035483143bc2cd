// The files of dhess spectrum (the extreme eigenpairs, the density, the diagonal, the plot) and
// the texts of its summary.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "dhess/core/collective.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/io/hdf5_matrix.hpp"
#include "dhess/io/json_file.hpp"
#include "dhess/io/npy.hpp"
#include "dhess/report/plot.hpp"
#include "spectrum_phases.hpp"

namespace dhess {
namespace {

void write_density(const SpectrumResults& results, const OutputDir& out) {
  std::ofstream d(out.staged("density.csv"));
  d.precision(17);
  d << "lambda,density\n";
  for (std::size_t i = 0; i < results.density.grid.size(); ++i)
    d << results.density.grid[i] << "," << results.density.density[i] << "\n";
  std::ofstream q(out.staged("slq_nodes.csv"));
  q.precision(17);
  q << "probe,node,weight\n";
  for (const auto& x : results.nodes) q << x.probe << "," << x.node << "," << x.weight << "\n";
  if (!d || !q) throw ResourceError("cannot write density.csv in '" + out.path() + "' (disk full?)");
}

// diagonal.npy flat, diagonal.h5 one dataset per parameter tensor in its shape (and NAME.stderr).
void write_diagonal(const std::vector<double>& all, const std::vector<double>& stderr_all,
                    const ParameterLayout& layout, const OutputDir& out) {
  write_npy(out.staged("diagonal.npy"), all.data(), {layout.n()});
  std::vector<NamedArray> arrays;
  for (const auto& p : layout.parameters()) arrays.push_back({p.name, p.shape, all.data() + p.offset});
  if (!stderr_all.empty())
    for (const auto& p : layout.parameters())
      arrays.push_back({p.name + ".stderr", p.shape, stderr_all.data() + p.offset});
  write_hdf5_arrays(out.staged("diagonal.h5"), arrays);
}

// "" or why spectrum.png was not drawn.
std::string draw(const std::vector<double>& values, int64_t n, const std::string& matrix, const OutputDir& out) {
  std::vector<std::string> args = {"--out",     out.staged("spectrum.png"),
                                   "--density", out.staged("density.csv"),
                                   "--title",   matrix + " spectral density (SLQ), n = " + std::to_string(n)};
  if (!values.empty()) {
    std::vector<double> ends = {values.front(), values.back()};
    write_npy(out.staged("extremes.tmp.npy"), ends.data(), {2});
    args.insert(args.end(), {"--extremes", out.staged("extremes.tmp.npy")});
  }
  const std::string problem = draw_spectrum(args);
  std::remove(out.staged("extremes.tmp.npy").c_str());
  return problem;
}

}  // namespace

std::vector<std::string> write_spectrum_files(const Rank& r, const SpectrumResults& results, const RowShard& shard,
                                              const ParameterLayout& layout, const std::string& matrix,
                                              OutputDir& out) {
  std::vector<std::string> files;
  const std::vector<double>& values = results.values;
  if (!values.empty()) {
    write_hdf5_row_shards(out.staged("eigenvectors.h5"), "eigenvectors", results.vectors.data(), shard.begin,
                          shard.rows(), shard.n, static_cast<int64_t>(values.size()), r.comm);
    files.insert(files.end(), {"eigenvectors.h5", "eigenvalues.npy"});
  }
  const DiagonalResult& diagonal = results.diagonal;
  const std::vector<double> diagonal_all =
      diagonal.values.empty() ? std::vector<double>() : gather_columns_to_root(diagonal.values, shard, 1, r.comm);
  const std::vector<double> stderr_all = diagonal.stderr_values.empty()
                                             ? std::vector<double>()
                                             : gather_columns_to_root(diagonal.stderr_values, shard, 1, r.comm);
  if (!diagonal.values.empty()) files.insert(files.end(), {"diagonal.npy", "diagonal.h5"});
  if (!results.nodes.empty()) files.insert(files.end(), {"density.csv", "slq_nodes.csv"});
  files.push_back("layout.json");
  std::string png_problem;
  run_collectively(r.comm, [&] {
    if (!r.root()) return;
    if (!values.empty()) write_npy(out.staged("eigenvalues.npy"), values.data(), {static_cast<int64_t>(values.size())});
    if (!results.nodes.empty()) write_density(results, out);
    if (!diagonal_all.empty()) write_diagonal(diagonal_all, stderr_all, layout, out);
    write_json(out.staged("layout.json"), layout.to_json());
    if (!results.nodes.empty()) png_problem = draw(values, shard.n, matrix, out);
  });
  int drawn = !results.nodes.empty() && png_problem.empty() ? 1 : 0;
  MPI_Bcast(&drawn, 1, MPI_INT, 0, r.comm);
  if (drawn)
    files.push_back("spectrum.png");
  else if (!results.nodes.empty())
    warn(r, "spectrum.png not drawn: " + png_problem);
  return files;
}

nlohmann::json diagonal_per_parameter(const Rank& r, const DiagonalResult& diagonal, const RowShard& shard,
                                      const ParameterLayout& layout) {
  const std::size_t count = layout.parameters().size();
  std::vector<double> sums(count, 0.0), largest(count, 0.0);
  for (int64_t i = shard.begin; i < shard.end; ++i) {
    const std::size_t p = layout.owner_of(i);
    const double d = diagonal.values[static_cast<std::size_t>(i - shard.begin)];
    sums[p] += d;
    largest[p] = std::max(largest[p], std::abs(d));
  }
  MPI_Allreduce(MPI_IN_PLACE, sums.data(), static_cast<int>(count), MPI_DOUBLE, MPI_SUM, r.comm);
  MPI_Allreduce(MPI_IN_PLACE, largest.data(), static_cast<int>(count), MPI_DOUBLE, MPI_MAX, r.comm);
  nlohmann::json per_param = nlohmann::json::object();
  for (std::size_t p = 0; p < count; ++p)
    per_param[layout.parameters()[p].name] = {{"sum", sums[p]}, {"max_abs", largest[p]}};
  return per_param;
}

// "trace: -40.8 (exact: sum of the exact diagonal); estimates: Hutch++ ..." or "trace: about ... +- ...".
std::string trace_line(const nlohmann::json& t) {
  auto number = [](const nlohmann::json& v) { return std::to_string(v.get<double>()); };
  std::string estimates;
  for (const auto& [key, name] : {std::pair{"hutchpp", "Hutch++"}, std::pair{"hutchinson", "Hutchinson"}})
    if (t.contains(key))
      estimates += (estimates.empty() ? "" : ", ") + std::string(name) + " " + number(t[key]) + " +- " +
                   number(t[std::string(key) + "_stderr"]);
  if (t["exact"].get<bool>())
    return "  trace: " + number(t["value"]) + " (" + t["method"].get<std::string>() + ")" +
           (estimates.empty() ? "" : "; estimates: " + estimates) + "\n";
  return "  trace: about " + number(t["value"]) + " +- " + number(t["stderr"]) + " (" + t["method"].get<std::string>() +
         ")\n";
}

nlohmann::json precision_of(Dtype dtype) {
  const bool single = dtype == Dtype::float32;
  return {
      {"products", dtype_name(dtype)},
      {"vectors_and_recurrences", "float64"},
      {"accuracy", single ? "float32 products: on the model zoo (tests/e2e/test_zoo.py) the top eigenvalues and the "
                            "trace stay within 1e-5 relative of float64 products (measured: below 4e-7); "
                            "the default --tol is 1e-5"
                          : "float64 throughout"}};
}

}  // namespace dhess
