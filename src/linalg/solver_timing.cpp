#include "dhess/linalg/solver_timing.hpp"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "blas.hpp"
#include "dhess/core/collective.hpp"
#include "dhess/core/memory.hpp"
#include "dhess/dist/process_grid.hpp"

namespace dhess {
namespace {

// Entry (i, j) of a seeded random symmetric matrix, computed where it lives: uniform in [-1, 1].
double random_symmetric(int64_t i, int64_t j) {
  uint64_t x = static_cast<uint64_t>(std::min(i, j)) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(std::max(i, j));
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return static_cast<double>(x >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

template <typename T>
double time_one_solve(int64_t m, int block, EigenRequest request, Solver solver) {
  ProcessGrid grid(MPI_COMM_SELF, 1, 1);
  BlockCyclicMatrix<T> a(grid, m, m, block, block);
  for (int64_t lj = 0; lj < a.local_cols(); ++lj)
    for (int64_t li = 0; li < a.local_rows(); ++li)
      a.at_local(li, lj) = static_cast<T>(random_symmetric(a.global_row(li), a.global_col(lj)));
  request.k = std::min<int64_t>(request.k, m);
  const double t0 = MPI_Wtime();
  solve(grid, a, request, solver);
  return MPI_Wtime() - t0;
}

// The slowest rank's time for one size: each rank solves on its own, side by side, as the ranks
// of the run share the node; the maximum is agreed outside the guarded section.
double time_size(int64_t m, int block, const EigenRequest& request, Solver solver, Dtype dtype, MPI_Comm comm) {
  double t = 0;
  run_collectively(comm, [&] {
    t = dtype == Dtype::float64 ? time_one_solve<double>(m, block, request, solver)
                                : time_one_solve<float>(m, block, request, solver);
  });
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, comm);
  return t;
}

// a and b of t = a·n³ + b·n² through the last two points; a pure n³ through the last when the fit
// is not positive.
std::pair<double, double> fit_cubic(const std::vector<std::pair<double, double>>& points) {
  const auto [n2, t2] = points.back();
  if (points.size() < 2) return {t2 / (n2 * n2 * n2), 0};
  const auto [n1, t1] = points[points.size() - 2];
  const double fa = (t2 - t1 * (n2 / n1) * (n2 / n1)) / (n2 * n2 * (n2 - n1));
  const double fb = (t1 - fa * n1 * n1 * n1) / (n1 * n1);
  if (fa > 0 && fb > 0) return {fa, fb};
  return {t2 / (n2 * n2 * n2), 0};
}

std::string basis_text(const std::vector<std::pair<double, double>>& points, int64_t n, double parallel) {
  std::string text = "random matrices of n = ";
  for (std::size_t i = 0; i < points.size(); ++i)
    text += (i ? ", " : "") + std::to_string(static_cast<int64_t>(points[i].first));
  text += " timed on one process";
  if (points.back().first != static_cast<double>(n)) text += ", fitted to a n^3 + b n^2";
  if (parallel > 1) text += ", 70% parallel efficiency assumed";
  return text;
}

// Flops per second of a 512 x 512 dgemm on this core, the best of three.
double dgemm_rate() {
  const int m = 512;
  std::vector<double> a(static_cast<std::size_t>(m) * m, 0.5), b(a), c(a.size());
  const double one = 1, zero = 0;
  double best = 1e300;
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = MPI_Wtime();
    dgemm_("N", "N", &m, &m, &m, &one, a.data(), &m, b.data(), &m, &zero, c.data(), &m);
    best = std::min(best, MPI_Wtime() - t0);
  }
  return 2.0 * m * m * m / std::max(best, 1e-9);
}

}  // namespace

double solver_seconds_lower_bound(const EigenRequest& request, int64_t n, int ranks, MPI_Comm comm) {
  double rate = dgemm_rate();
  MPI_Allreduce(MPI_IN_PLACE, &rate, 1, MPI_DOUBLE, MPI_MIN, comm);
  const double nn = static_cast<double>(n);
  const double flops = (request.kind == EigenRequest::Kind::all ? 10.0 : 4.0) / 3.0 * nn * nn * nn;
  return flops / (rate * ranks);
}

// Doubling sizes until a solve takes a second and the matrix is twice the last-level cache (below
// that, the memory-bound half of the tridiagonal reduction runs from cache and looks fast), or
// until the next size would take the timing past max_seconds. The last two sizes are fitted to
// t = a·n³ + b·n²: the n³ term is the reduction to tridiagonal or band form, the n² term what
// grows slower (band reduction, tridiagonal solve) and dominates small sizes, so a pure n³
// scaling of one small timing overestimates. Divided by the ranks at an assumed 70% parallel
// efficiency. A random matrix has no deflation: a Hessian with many near-zero eigenvalues can
// solve faster (bench/RESULTS.md, section d, compares with a real run).
SolverTiming time_solver(Solver solver, const EigenRequest& request, int64_t n, int block, Dtype dtype, int ranks,
                         double budget_bytes, MPI_Comm comm, double max_seconds) {
  const double element = static_cast<double>(dtype_bytes(dtype));
  // Sizes whose matrix and workspace (about 5 copies) take at most a quarter of the budget.
  const int64_t largest = std::max<int64_t>(256, static_cast<int64_t>(std::sqrt(0.25 * budget_bytes / (5 * element))));
  const double cache = static_cast<double>(last_level_cache_bytes());
  std::vector<std::pair<double, double>> points;
  double spent = 0;
  for (int64_t m = 1024;; m *= 2) {
    const int64_t size = std::min({m, n, largest});
    const double t = time_size(size, block, request, solver, dtype, comm);
    points.emplace_back(static_cast<double>(size), t);
    spent += t;
    // max_seconds at most: the next size would take about eight times the last.
    const bool enough =
        points.size() >= 2 && ((t >= 1.0 && element * size * size >= 2 * cache) || spent + 8 * t > max_seconds);
    if (size < m || enough) break;
  }
  const auto [a, b] = fit_cubic(points);
  const double parallel = ranks == 1 ? 1.0 : 0.7 * ranks;
  const double nn = static_cast<double>(n);
  SolverTiming timing;
  timing.seconds = (a * nn * nn * nn + b * nn * nn) / parallel;
  timing.basis = basis_text(points, n, parallel);
  // Divide and conquer (ELPA, pdsyevd) deflates equal and zero eigenvalues, which random matrices
  // do not have and many Hessians do: the built-in convnet's, 89% exactly zero, solved in about 0.6x
  // the estimate (bench/RESULTS.md, section d). MRRR (pdsyevr, dsyevr) and the values-only root
  // finder of dsyevd cost the same for any spectrum.
  if (solver == Solver::elpa ||
      (request.kind == EigenRequest::Kind::all && (solver == Solver::pdsyevd || solver == Solver::lapack))) {
    timing.upper_bound = true;
    timing.basis += "; an upper bound: spectra with many equal or zero eigenvalues deflate and solve faster";
  }
  return timing;
}

}  // namespace dhess
