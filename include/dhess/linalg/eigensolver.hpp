#pragma once
// Eigensolver backends over a BlockCyclicMatrix: ScaLAPACK pdsyevd (all
// eigenpairs), pdsyevr (values only, index ranges), ELPA (2-stage) and, on one
// process, LAPACK dsyevd/dsyevr.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dhess/core/dtype.hpp"
#include "dhess/dist/block_cyclic.hpp"
#include "dhess/linalg/sharded.hpp"

namespace dhess {

struct EigenRequest {
  enum class Kind { none, values, all, top, bottom };
  Kind kind = Kind::values;
  int64_t k = 0;  // for top/bottom
  bool wants_vectors() const { return kind == Kind::all || kind == Kind::top || kind == Kind::bottom; }
  // Number of eigenvalues this request returns for an n×n matrix.
  int64_t count(int64_t n) const;
  std::string text() const;
};
// Throws UsageError when K is outside [1, n].
void check_eigen_request(const EigenRequest& request, int64_t n);

enum class Solver { automatic, pdsyevd, pdsyevr, elpa, lapack, lowrank };
bool elpa_available();
// The backend `automatic` resolves to for this request, grid and block size.
Solver choose_solver(Solver wanted, const EigenRequest& request, int block, int grid_rows, int grid_cols, int64_t n);
// Its choice where ELPA is out (does not fit, or float32): LAPACK on one process, else ScaLAPACK.
Solver choose_solver_without_elpa(const EigenRequest& request, int grid_rows, int grid_cols, int64_t n);
const char* solver_name(Solver solver);
// Block size ELPA accepts for n on a pr×pc grid (a power of two, one block per process row/column).
bool elpa_accepts(int block, int grid_rows, int grid_cols, int64_t n);
// LAPACK's 32-bit integers: n² elements in one array, and for all pairs dsyevd's 1 + 6n + 2n² workspace.
bool lapack_accepts(const EigenRequest& request, int64_t n);
// Throws UsageError, before any heavy work, where an explicitly chosen solver cannot run on this
// grid: ELPA with a block it does not accept, LAPACK on more than one process or past 32-bit sizes.
void check_solver(Solver solver, const EigenRequest& request, int block, int grid_rows, int grid_cols, int64_t n);
// Debian's ScaLAPACK, LAPACK and ELPA are LP64 (32-bit Fortran INTEGER): a rank's share of H must
// stay within 2^31 - 1 elements (the drivers form local offsets like A(IIA+(JJA-1)*LDA) in 32
// bits) and every LWORK within 2^31 - 1 (tests/test_int32_limits.cpp finds where each breaks).
// "" when `solver` can run n on this grid, else why not.
std::string int32_limit(Solver solver, const EigenRequest& request, int64_t n, int block, int grid_rows, int grid_cols);
// The backend a run uses: `wanted` checked (check_solver, Debian's ELPA refused in single
// precision, where it fails), or automatic resolved for this dtype, taking a solver within the
// 32-bit limits where its first choice is not. Throws UsageError for a solver that cannot run here.
Solver resolve_solver(Solver wanted, const EigenRequest& request, int block, int grid_rows, int grid_cols, int64_t n,
                      Dtype dtype);
// "" when `solver` is within the 32-bit limits here, else why not and the smallest rank count
// that works.
std::string int32_refusal(Solver solver, const EigenRequest& request, int64_t n, int block, int grid_rows,
                          int grid_cols);

// What the rank-revealing solver did where it ran: the nonzero eigenvalues it found (rank), the
// products of its sketch and certificates, the certified ||(I - QQ^T) H|| relative to max|lambda|
// and its seconds; answered false when it stopped at its sketch bound and another solver answered.
struct LowRankReport {
  bool tried = false, answered = false;
  int64_t rank = 0, sketch_columns = 0;
  double certificate = 0, seconds = 0;
  std::string why_not;
};

template <typename T>
struct Spectrum {
  std::vector<double> values;                     // ascending
  std::unique_ptr<BlockCyclicMatrix<T>> vectors;  // column first_column + i belongs to values[i]
  int64_t first_column = 0;
  std::string routine;  // e.g. "pdsyevd"
  LowRankReport lowrank;
};

// The most vectors the rank-revealing solver sketches before another solver answers instead; 0:
// it does not run. --solver lowrank: n / 4, at least min(n, 256). --solver auto in float64 for --eigen
// values, top:K and bottom:K at n >= 2,048: n / 2 (past that, orthonormalizing the basis costs as
// much as a tridiagonal reduction), shrunk until the sketch fits in the larger of H's share and
// the `resolved` solver's workspace, so that trying it never makes a run need more memory. Within
// that bound auto's sketch is limited by time (the dense run gives it a share of the full solver's
// estimated time: its worst-case regret).
// --solver auto's sketch may take this share of the full solver's estimated time: where H's rank is
// too large for it, the run costs at most 1 + kLowrankRegret times the full solver alone (plus the
// two seconds of timing that estimate it).
constexpr double kLowrankRegret = 0.25;
int64_t lowrank_sketch_columns(Solver wanted, Solver resolved, const EigenRequest& request, Dtype dtype, int64_t n,
                               int block, int grid_rows, int grid_cols);

// The time the rank-revealing sketch may take (0: no limit), and a costlier estimate of it asked
// once where the sketch runs past the first (RangeFinderOptions::seconds and refine).
struct SketchTime {
  double seconds = 0;
  std::function<double()> refine;
};

// Eigendecomposition of `h` (overwritten unless the sketch answers) by a resolved `solver`
// (resolve_solver), after the rank-revealing sketch of up to `sketch_columns` vectors where that
// is > 0 (float64 only), H·Ω by `products` where given (lowrank.hpp), else by pdgemm, within
// `time`. `h` must have square blocks.
template <typename T>
Spectrum<T> solve(const ProcessGrid& grid, BlockCyclicMatrix<T>& h, const EigenRequest& request, Solver solver,
                  int64_t sketch_columns = 0, const ShardedOperator& products = {}, const SketchTime& time = {});

// Workspace bytes per rank the solver will ask for (for pre-flight planning), or the sketch of
// `sketch_columns` vectors where that is larger (it is freed before the solver runs).
std::size_t solver_workspace_bytes(Solver solver, const EigenRequest& request, int64_t n, int block, int grid_rows,
                                   int grid_cols, std::size_t element_bytes, int64_t sketch_columns = 0);

}  // namespace dhess
