#include "dhess/linalg/lowrank.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "dhess/dist/row_shard.hpp"
#include "scalapack.hpp"

namespace dhess {
namespace {

// H·X for X held as row blocks (a P×1 layout, the range finder's row shards): X to H's 2D layout,
// one pdgemm, Y back to row blocks.
class AssembledOperator {
 public:
  AssembledOperator(const ProcessGrid& grid, const BlockCyclicMatrix<double>& h, const RowShard& shard)
      : grid_(grid), h_(h), shard_(shard), rows_block_(static_cast<int>((h.rows() + grid.size() - 1) / grid.size())) {}

  void operator()(const double* x, int64_t k, double* y) const {
    const int64_t n = h_.rows();
    const int nb = h_.col_block();
    BlockCyclicMatrix<double> rows_in(grid_.column_context(), n, k, rows_block_, static_cast<int>(k), 0);
    std::copy(x, x + shard_.rows() * k, rows_in.data());
    BlockCyclicMatrix<double> x2(grid_, n, k, nb, nb), y2(grid_, n, k, nb, nb);
    redistribute<double>(n, k, rows_in.data(), 0, 0, rows_in.desc(), x2.data(), 0, 0, x2.desc(), grid_.context());
    const int nn = static_cast<int>(n), kk = static_cast<int>(k), one = 1;
    const double alpha = 1, beta = 0;
    pdgemm_("N", "N", &nn, &kk, &nn, &alpha, h_.data(), &one, &one, h_.desc(), x2.data(), &one, &one, x2.desc(), &beta,
            y2.data(), &one, &one, y2.desc());
    redistribute<double>(n, k, y2.data(), 0, 0, y2.desc(), rows_in.data(), 0, 0, rows_in.desc(), grid_.context());
    std::copy(rows_in.data(), rows_in.data() + shard_.rows() * k, y);
  }

 private:
  const ProcessGrid& grid_;
  const BlockCyclicMatrix<double>& h_;
  const RowShard shard_;
  const int rows_block_;
};

// The request's eigenpairs among the nonzero ones and n - count zeros; unset where the request
// reaches zero eigenvalues and their vectors (a null-space basis the sketch does not build).
std::optional<std::pair<int64_t, int64_t>> wanted_columns(const EigenRequest& request, const NonzeroSpectrum& s,
                                                          int64_t n) {
  const auto count = static_cast<int64_t>(s.values.size());
  const int64_t negative = std::count_if(s.values.begin(), s.values.end(), [](double v) { return v < 0; });
  const int64_t k = request.count(n);
  const bool zeros = count < n;
  if (request.kind == EigenRequest::Kind::top && (k <= count - negative || !zeros)) return {{count - k, count}};
  if (request.kind == EigenRequest::Kind::bottom && (k <= negative || !zeros)) return {{0, k}};
  return std::nullopt;
}

}  // namespace

std::optional<Spectrum<double>> lowrank_solve(const ProcessGrid& grid, const BlockCyclicMatrix<double>& h,
                                              const EigenRequest& request, const RangeFinderOptions& options,
                                              LowRankReport& report, const ShardedOperator& products) {
  const int64_t n = h.rows();
  const RowShard shard = RowShard::blocks(n, grid.rank(), grid.size());
  const ShardedOperator apply = products ? products : ShardedOperator(AssembledOperator(grid, h, shard));
  const NonzeroSpectrum s = nonzero_spectrum(apply, shard, options, grid.comm());
  report.rank = s.rank;
  report.sketch_columns = s.sketch_columns;
  if (!s.complete) {
    report.why_not = "its range has more than " + std::to_string(s.rank) + " dimensions (" +
                     (s.out_of_time ? std::string("a larger sketch would pass its time budget")
                                    : "sketch bound " + std::to_string(options.max_columns) + " vectors") +
                     ")";
    return std::nullopt;
  }
  report.rank = static_cast<int64_t>(s.values.size());
  report.certificate = s.norm > 0 ? s.bound / s.norm : 0.0;
  Spectrum<double> spectrum;
  spectrum.routine = "lowrank";
  if (request.kind == EigenRequest::Kind::values) {
    spectrum.values = s.values;
    spectrum.values.resize(static_cast<std::size_t>(n), 0.0);
    std::sort(spectrum.values.begin(), spectrum.values.end());
    report.answered = true;
    return spectrum;
  }
  const auto columns = wanted_columns(request, s, n);
  if (!columns) {
    report.why_not = request.text() + " reaches zero eigenvalues, whose null-space vectors the sketch does not build";
    return std::nullopt;
  }
  const auto [first, last] = *columns;
  const int rows_block = static_cast<int>((n + grid.size() - 1) / grid.size());
  spectrum.values.assign(s.values.begin() + first, s.values.begin() + last);
  spectrum.vectors = std::make_unique<BlockCyclicMatrix<double>>(
      grid.column_context(), n, last - first, rows_block, static_cast<int>(std::max<int64_t>(1, last - first)), 0);
  std::copy(s.vectors.begin() + first * shard.rows(), s.vectors.begin() + last * shard.rows(),
            spectrum.vectors->data());
  report.answered = true;
  return spectrum;
}

}  // namespace dhess
