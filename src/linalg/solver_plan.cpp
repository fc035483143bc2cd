// What a solver needs before it runs: its workspace (for the memory plan), the rank-revealing
// sketch's bound, the 32-bit limits of LP64 ScaLAPACK and LAPACK, and the backend --solver auto
// resolves to within them.
#include <algorithm>
#include <string>

#include "dhess/core/errors.hpp"
#include "dhess/dist/block_cyclic.hpp"
#include "dhess/dist/process_grid.hpp"
#include "dhess/linalg/eigensolver.hpp"

namespace dhess {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

namespace {

// The words of workspace (LWORK) the solver takes: a ScaLAPACK driver's query, as measured and
// rounded by run_pdsyevd/run_pdsyevr; LAPACK's; ELPA's own allocations (measured).
int64_t workspace_elements(Solver chosen, const EigenRequest& request, int64_t n, int block, int grid_rows,
                           int grid_cols) {
  // Process (0, 0) holds the most rows and columns.
  const int64_t np = CyclicAxis{n, block, grid_rows, 0}.local_extent(0);
  const int64_t nq = CyclicAxis{n, block, grid_cols, 0}.local_extent(0);
  const int64_t share = np * nq;
  if (chosen == Solver::lapack) {
    // dsyevd: 1 + 6n + 2n² for all pairs (the vectors overwrite H), its blocked dsytrd's n(nb + 2)
    // for values; dsyevr: 26n plus the K vectors.
    if (request.kind == EigenRequest::Kind::all) return 1 + 6 * n + 2 * n * n;
    if (request.kind == EigenRequest::Kind::values) return n * (block + 2) + 2 * n + 1;
    return 26 * n + request.count(n) * n;
  }
  // ELPA 2-stage, measured above H itself (bench/RESULTS.md, sections b, d, e): 3.5-3.75 H shares
  // for n = 2,000 to 12,000, 2.5 at n = 16,325 and 23,365, on 1 and 2 ranks, random and real
  // Hessians alike. 3.2 keeps the plan within 10% below and 20% above the peak across both regimes.
  if (chosen == Solver::lowrank) return 0;  // its sketch: sketch_elements
  if (chosen == Solver::elpa && !request.wants_vectors()) return 16 * share / 5 + 8 * n;
  if (chosen == Solver::elpa) return 2 * share + 8 * n;
  if (chosen == Solver::pdsyevd && request.kind == EigenRequest::Kind::all) return 1 + 6 * n + 2 * share + 2 * n;
  if (request.wants_vectors())
    return 2 + 5 * n + std::max<int64_t>(18 * n, share + 2 * block * block) +
           (2 + ceil_div(request.count(n), static_cast<int64_t>(grid_rows) * grid_cols)) * n;
  return 2 + 5 * n + std::max<int64_t>(12 * n, block * (np + 1));
}

// The rank-revealing solver's memory at its sketch bound k, in row blocks of n / P rows: the
// basis (its vector's growth may hold two), H·Q as the sketch makes it, the last sketch block with
// its input vectors and their copies in H's layout for pdgemm, then the eigenvectors; B = QᵀHQ and
// its eigenvectors whole on every rank.
int64_t sketch_elements(int64_t n, int64_t ranks, int64_t k) { return 6 * k * ceil_div(n, ranks) + 2 * k * k; }

constexpr int64_t int32_max = 2147483647;

std::string grid_text(int rows, int cols) { return std::to_string(rows) + "x" + std::to_string(cols); }

// The smallest rank count, from `ranks` + 1 on (near-square grids, the same block), at which
// `solver` (LAPACK becomes ScaLAPACK past one process) stays within 32-bit sizes; 0 if none does.
int ranks_within_int32(Solver solver, const EigenRequest& request, int64_t n, int block, int ranks) {
  for (int p = ranks + 1; p <= (1 << 20); ++p) {
    const auto [rows, cols] = square_grid(p);
    const Solver on_grid = solver == Solver::lapack ? choose_solver_without_elpa(request, rows, cols, n) : solver;
    if (int32_limit(on_grid, request, n, block, rows, cols).empty()) return p;
  }
  return 0;
}

}  // namespace

int64_t lowrank_sketch_columns(Solver wanted, Solver resolved, const EigenRequest& request, Dtype dtype, int64_t n,
                               int block, int grid_rows, int grid_cols) {
  if (wanted == Solver::lowrank) return std::max(n / 4, std::min<int64_t>(n, 256));
  const bool eligible = request.kind == EigenRequest::Kind::values || request.kind == EigenRequest::Kind::top ||
                        request.kind == EigenRequest::Kind::bottom;
  if (wanted != Solver::automatic || dtype != Dtype::float64 || !eligible || n < 2048) return 0;
  const int64_t share =
      CyclicAxis{n, block, grid_rows, 0}.local_extent(0) * CyclicAxis{n, block, grid_cols, 0}.local_extent(0);
  const int64_t room = std::max(share, workspace_elements(resolved, request, n, block, grid_rows, grid_cols));
  const int64_t ranks = static_cast<int64_t>(grid_rows) * grid_cols;
  int64_t k = n / 2;
  while (k > 0 && sketch_elements(n, ranks, k) > room) k = k * 7 / 8;
  return k;
}

std::string int32_limit(Solver solver, const EigenRequest& request, int64_t n, int block, int grid_rows,
                        int grid_cols) {
  if (request.kind == EigenRequest::Kind::none) return "";
  if (solver == Solver::lapack)
    return lapack_accepts(request, n)
               ? ""
               : "LAPACK's n^2 matrix" +
                     std::string(request.kind == EigenRequest::Kind::all ? " and 2n^2 workspace" : "") +
                     " would pass 2^31 - 1 elements";
  const int64_t np = CyclicAxis{n, block, grid_rows, 0}.local_extent(0);
  const int64_t nq = CyclicAxis{n, block, grid_cols, 0}.local_extent(0);
  if (np * nq > int32_max)
    return "a rank's share of H would be " + std::to_string(np) + " x " + std::to_string(nq) + " = " +
           std::to_string(np * nq) + " elements, past the 2^31 - 1 a 32-bit (LP64) ScaLAPACK or ELPA can index";
  if (solver == Solver::elpa || solver == Solver::lowrank) return "";  // no LWORK: they allocate their own
  const int64_t lwork = workspace_elements(solver, request, n, block, grid_rows, grid_cols);
  if (lwork > int32_max)
    return std::string(solver_name(solver)) + "'s workspace would be " + std::to_string(lwork) +
           " elements, past the 2^31 - 1 its 32-bit LWORK can pass";
  return "";
}

std::size_t solver_workspace_bytes(Solver solver, const EigenRequest& request, int64_t n, int block, int grid_rows,
                                   int grid_cols, std::size_t element_bytes, int64_t sketch_columns) {
  if (request.kind == EigenRequest::Kind::none) return 0;
  const Solver chosen = choose_solver(solver, request, block, grid_rows, grid_cols, n);
  const int64_t elements = std::max(workspace_elements(chosen, request, n, block, grid_rows, grid_cols),
                                    sketch_elements(n, static_cast<int64_t>(grid_rows) * grid_cols, sketch_columns));
  const int64_t integers = chosen == Solver::lapack ? 10 * n : 12 * n;
  return static_cast<std::size_t>(elements) * element_bytes + static_cast<std::size_t>(integers) * sizeof(int);
}

namespace {

// The backends --solver auto may take instead of its first choice, in order of preference.
bool may_take(Solver solver, const EigenRequest& request, int block, int grid_rows, int grid_cols, int64_t n,
              Dtype dtype) {
  if (solver == Solver::elpa)
    return elpa_available() && dtype == Dtype::float64 && elpa_accepts(block, grid_rows, grid_cols, n);
  return solver != Solver::pdsyevd || request.kind == EigenRequest::Kind::all;
}

}  // namespace

Solver resolve_solver(Solver wanted, const EigenRequest& request, int block, int grid_rows, int grid_cols, int64_t n,
                      Dtype dtype) {
  if (request.kind == EigenRequest::Kind::none) return wanted;
  if (wanted == Solver::elpa && !elpa_available()) throw UsageError("--solver elpa: this dhess was built without ELPA");
  if (wanted == Solver::elpa && dtype == Dtype::float32)
    throw UsageError(
        "--solver elpa fails in single precision with Debian's ELPA (ELPA_ERROR_DURING_COMPUTATION); "
        "with --dtype float32 use auto, pdsyevd, pdsyevr or lapack");
  if (wanted == Solver::lowrank && dtype == Dtype::float32)
    throw UsageError("--solver lowrank certifies its range in float64; use --dtype float64");
  check_solver(wanted, request, block, grid_rows, grid_cols, n);
  Solver chosen = choose_solver(wanted, request, block, grid_rows, grid_cols, n);
  if (chosen == Solver::elpa && dtype == Dtype::float32)
    chosen = choose_solver_without_elpa(request, grid_rows, grid_cols, n);
  if (wanted != Solver::automatic || int32_limit(chosen, request, n, block, grid_rows, grid_cols).empty())
    return chosen;
  // Debian's libraries are LP64: where the first choice cannot index this size, a solver that can.
  for (Solver other : {Solver::pdsyevr, Solver::elpa, Solver::pdsyevd})
    if (may_take(other, request, block, grid_rows, grid_cols, n, dtype) &&
        int32_limit(other, request, n, block, grid_rows, grid_cols).empty())
      return other;
  return chosen;
}

std::string int32_refusal(Solver solver, const EigenRequest& request, int64_t n, int block, int grid_rows,
                          int grid_cols) {
  const std::string limit = int32_limit(solver, request, n, block, grid_rows, grid_cols);
  if (limit.empty()) return "";
  const int ranks = grid_rows * grid_cols;
  const int enough = ranks_within_int32(solver, request, n, block, ranks);
  const auto [rows, cols] = square_grid(std::max(enough, 1));
  return "n = " + std::to_string(n) + " with " + solver_name(solver) + " on " + std::to_string(ranks) +
         " rank(s) (grid " + grid_text(grid_rows, grid_cols) + ", block " + std::to_string(block) + "): " + limit +
         "; " +
         (enough > 0 ? "use at least " + std::to_string(enough) + " ranks (grid " + grid_text(rows, cols) + ")"
                     : "no rank count up to 2^20 avoids it") +
         (request.wants_vectors() ? ", or --eigen values" : "");
}

}  // namespace dhess
