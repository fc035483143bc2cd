#include "dhess/linalg/eigensolver.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

#include "dhess/core/errors.hpp"
#include "dhess/dist/process_grid.hpp"
#include "dhess/linalg/lowrank.hpp"
#include "scalapack.hpp"

namespace dhess {

int64_t EigenRequest::count(int64_t n) const {
  switch (kind) {
    case Kind::none: return 0;
    case Kind::values:
    case Kind::all: return n;
    case Kind::top:
    case Kind::bottom: return std::min(k, n);
  }
  return 0;
}

std::string EigenRequest::text() const {
  switch (kind) {
    case Kind::none: return "none";
    case Kind::values: return "values";
    case Kind::all: return "all";
    case Kind::top: return "top:" + std::to_string(k);
    case Kind::bottom: return "bottom:" + std::to_string(k);
  }
  return "?";
}

void check_eigen_request(const EigenRequest& request, int64_t n) {
  if ((request.kind == EigenRequest::Kind::top || request.kind == EigenRequest::Kind::bottom) && request.k > n)
    throw UsageError("--eigen " + request.text() + " asks for " + std::to_string(request.k) +
                     " eigenpairs but the Hessian has n = " + std::to_string(n));
}

const char* solver_name(Solver solver) {
  switch (solver) {
    case Solver::automatic: return "auto";
    case Solver::pdsyevd: return "pdsyevd";
    case Solver::pdsyevr: return "pdsyevr";
    case Solver::elpa: return "elpa";
    case Solver::lapack: return "lapack";
    case Solver::lowrank: return "lowrank";
  }
  return "?";
}

bool elpa_accepts(int block, int grid_rows, int grid_cols, int64_t n) {
  bool power_of_two = block > 0 && (block & (block - 1)) == 0;
  return power_of_two && static_cast<int64_t>(block) * std::max(grid_rows, grid_cols) <= n;
}

bool lapack_accepts(const EigenRequest& request, int64_t n) {
  const int64_t largest = 2147483647;
  return n * n <= largest && (request.kind != EigenRequest::Kind::all || 1 + 6 * n + 2 * n * n <= largest);
}

Solver choose_solver_without_elpa(const EigenRequest& request, int grid_rows, int grid_cols, int64_t n) {
  // On one process ScaLAPACK is LAPACK plus overhead (pdsyevd 1.19x numpy's dsyevd at n = 6,085,
  // bench/RESULTS.md, section b): LAPACK itself.
  if (grid_rows * grid_cols == 1 && lapack_accepts(request, n)) return Solver::lapack;
  return request.kind == EigenRequest::Kind::all ? Solver::pdsyevd : Solver::pdsyevr;
}

Solver choose_solver(Solver wanted, const EigenRequest& request, int block, int grid_rows, int grid_cols, int64_t n) {
  if (wanted != Solver::automatic) return wanted;
  // Measured on the n = 2,885 convnet Hessian, 2 ranks (bench/RESULTS.md, section c): ELPA 2-stage
  // values 0.58x pdsyevr's time (and half numpy's dsyevd on one process, section b), ELPA 1-stage
  // all pairs 0.84x pdsyevd's. Index ranges stay with MRRR.
  const bool elpa = elpa_available() && elpa_accepts(block, grid_rows, grid_cols, n);
  const Solver other = choose_solver_without_elpa(request, grid_rows, grid_cols, n);
  if (request.kind == EigenRequest::Kind::values) return elpa ? Solver::elpa : other;
  // On one process ELPA 1-stage measured slower than pdsyevd: ELPA only from two processes on.
  if (request.kind == EigenRequest::Kind::all) return elpa && grid_rows * grid_cols >= 2 ? Solver::elpa : other;
  return other;
}

void check_solver(Solver solver, const EigenRequest& request, int block, int grid_rows, int grid_cols, int64_t n) {
  if (solver == Solver::lowrank && request.kind == EigenRequest::Kind::all)
    throw UsageError(
        "--solver lowrank answers --eigen values, top:K and bottom:K: all eigenpairs need a basis of the "
        "null space, n x (n - rank) (" +
        std::to_string(n) + " rows); use auto, pdsyevd or elpa");
  if (solver == Solver::elpa && !elpa_accepts(block, grid_rows, grid_cols, n))
    throw UsageError(
        "--solver elpa needs a power-of-two --block with at least one block per process row and column "
        "(block " +
        std::to_string(block) + ", grid " + std::to_string(grid_rows) + "x" + std::to_string(grid_cols) + ", n " +
        std::to_string(n) + ")");
  if (solver == Solver::lapack && grid_rows * grid_cols != 1)
    throw UsageError("--solver lapack runs on one process; with " + std::to_string(grid_rows * grid_cols) +
                     " ranks use auto, pdsyevd, pdsyevr or elpa");
  if (solver == Solver::lapack && !lapack_accepts(request, n))
    throw UsageError("--solver lapack: n = " + std::to_string(n) + " is past LAPACK's 32-bit sizes (n^2" +
                     (request.kind == EigenRequest::Kind::all ? " and 2n^2 workspace" : "") +
                     " below 2^31); use auto, pdsyevd, pdsyevr or elpa");
}

namespace {

// Workspace sizes from ScaLAPACK's query are sometimes too small (LAPACK
// Working Note 176); rounding up costs little and avoids info = -(argument) failures.
int round_up(double query, int64_t floor_value) {
  double v = std::max<double>(query * 1.1 + 1024, static_cast<double>(floor_value));
  if (v > 2147483647.0) throw ResourceError("eigensolver workspace exceeds 2^31 elements; use more ranks");
  return static_cast<int>(v);
}

void check_info(int info, const char* routine) {
  if (info == 0) return;
  if (info < 0)
    throw InternalError(std::string(routine) + " rejected argument " + std::to_string(-info) +
                        " (info = " + std::to_string(info) + ")");
  throw InternalError(std::string(routine) + " failed to converge (info = " + std::to_string(info) + ")");
}

template <typename T>
void syevd(const char* jobz, int n, T* a, const int* desca, T* w, T* z, const int* descz, T* work, int lwork,
           int* iwork, int liwork, int* info) {
  int one = 1;
  if constexpr (std::is_same_v<T, double>)
    pdsyevd_(jobz, "L", &n, a, &one, &one, desca, w, z, &one, &one, descz, work, &lwork, iwork, &liwork, info);
  else
    pssyevd_(jobz, "L", &n, a, &one, &one, desca, w, z, &one, &one, descz, work, &lwork, iwork, &liwork, info);
}

template <typename T>
void syevr(const char* jobz, const char* range, int n, T* a, const int* desca, int il, int iu, int* m, int* nz, T* w,
           T* z, const int* descz, T* work, int lwork, int* iwork, int liwork, int* info) {
  int one = 1;
  T zero = 0;
  if constexpr (std::is_same_v<T, double>)
    pdsyevr_(jobz, range, "L", &n, a, &one, &one, desca, &zero, &zero, &il, &iu, m, nz, w, z, &one, &one, descz, work,
             &lwork, iwork, &liwork, info);
  else
    pssyevr_(jobz, range, "L", &n, a, &one, &one, desca, &zero, &zero, &il, &iu, m, nz, w, z, &one, &one, descz, work,
             &lwork, iwork, &liwork, info);
}

template <typename T>
Spectrum<T> run_pdsyevd(const ProcessGrid& grid, BlockCyclicMatrix<T>& h) {
  const int n = static_cast<int>(h.rows());
  Spectrum<T> s;
  s.routine = std::is_same_v<T, double> ? "pdsyevd" : "pssyevd";
  s.vectors = std::make_unique<BlockCyclicMatrix<T>>(grid, h.rows(), h.cols(), h.row_block(), h.col_block());
  std::vector<T> w(n);
  T query = 0;
  int iquery = 0, info = 0;
  syevd<T>("V", n, h.data(), h.desc(), w.data(), s.vectors->data(), s.vectors->desc(), &query, -1, &iquery, -1, &info);
  check_info(info, s.routine.c_str());
  int lwork = round_up(query, 0);
  int liwork = round_up(iquery, 7 * static_cast<int64_t>(n) + 8 * grid.cols() + 2);
  std::vector<T> work(lwork);
  std::vector<int> iwork(liwork);
  syevd<T>("V", n, h.data(), h.desc(), w.data(), s.vectors->data(), s.vectors->desc(), work.data(), lwork, iwork.data(),
           liwork, &info);
  check_info(info, s.routine.c_str());
  s.values.assign(w.begin(), w.end());
  return s;
}

template <typename T>
Spectrum<T> run_pdsyevr(const ProcessGrid& grid, BlockCyclicMatrix<T>& h, const EigenRequest& request) {
  const int n = static_cast<int>(h.rows());
  Spectrum<T> s;
  s.routine = std::is_same_v<T, double> ? "pdsyevr" : "pssyevr";
  const bool vectors = request.wants_vectors();
  const char* jobz = vectors ? "V" : "N";
  const char* range = "A";
  int il = 1, iu = n;
  // pdsyevr hands pdormtr a fixed workspace that is too small when fewer than NB
  // eigenvectors are requested (ScaLAPACK 2.2: "PDORMTR parameter number 16 had
  // an illegal value" and wrong vectors), so an index range spans at least NB.
  const int want = static_cast<int>(request.k);
  const int span = vectors ? std::min(n, std::max(want, h.col_block())) : want;
  if (request.kind == EigenRequest::Kind::top) range = "I", il = n - span + 1;
  if (request.kind == EigenRequest::Kind::bottom) range = "I", iu = span;
  // pdsyevr checks Z as a global n×n matrix even when only some columns are computed.
  if (vectors)
    s.vectors = std::make_unique<BlockCyclicMatrix<T>>(grid, h.rows(), h.cols(), h.row_block(), h.col_block());
  T* z = vectors ? s.vectors->data() : nullptr;
  const int* descz = vectors ? s.vectors->desc() : h.desc();
  std::vector<T> w(n);
  T query = 0;
  int iquery = 0, info = 0, m = 0, nz = 0;
  syevr<T>(jobz, range, n, h.data(), h.desc(), il, iu, &m, &nz, w.data(), z, descz, &query, -1, &iquery, -1, &info);
  check_info(info, s.routine.c_str());
  // With the "optimal" workspace pdsyevr's PDSYNTRD gathers the whole matrix
  // onto a sqrt(P)×sqrt(P) sub-grid (one process for P < 4): n² extra elements
  // on one rank. A workspace below that threshold keeps the distributed PDSYTRD
  // and measured faster too (bench/RESULTS.md).
  const int64_t n64 = n, nb = h.col_block();
  const int64_t np = h.row_axis().local_extent(std::max(h.my_row(), 0));
  const int64_t head = 5 * n64 + 3;  // pdsyevr's own arrays before its work space
  const int64_t distributed = head + std::max<int64_t>(12 * n64, (np + 1) * nb) + 3 * nb + 1024;
  // pdsyevr's own minimum (its LWMIN), from process (0, 0)'s share of A and Z.
  const int64_t wanted = range[0] == 'I' ? iu - il + 1 : n64;
  const int64_t np00 = h.row_axis().local_extent(0);
  const int64_t mq00 = CyclicAxis{wanted, static_cast<int>(nb), grid.cols(), 0}.local_extent(0);
  const int64_t procs = static_cast<int64_t>(grid.rows()) * grid.cols();
  const int64_t minimum = vectors ? head - 1 + std::max<int64_t>(18 * n64, np00 * mq00 + 2 * nb * nb) +
                                        ((wanted + procs - 1) / procs + 2) * n64
                                  : head - 1 + 12 * n64;
  int64_t words = static_cast<int64_t>(query * 1.1) + 1024;
  if (words - head >= n64 * n64 + 3 * n64 + 1)
    words = std::max({minimum, distributed, vectors ? words - n64 * n64 : int64_t(0)});
  int lwork = round_up(static_cast<double>(words), 0);
  int liwork = round_up(iquery, 0);
  std::vector<T> work(lwork);
  std::vector<int> iwork(liwork);
  syevr<T>(jobz, range, n, h.data(), h.desc(), il, iu, &m, &nz, w.data(), z, descz, work.data(), lwork, iwork.data(),
           liwork, &info);
  check_info(info, s.routine.c_str());
  if (m != iu - il + 1)
    throw InternalError(s.routine + " returned " + std::to_string(m) + " eigenvalues, expected " +
                        std::to_string(iu - il + 1));
  // Keep the requested K of the widened range: the top K are its last columns.
  const int skip = request.kind == EigenRequest::Kind::top ? m - want : 0;
  const int keep = request.kind == EigenRequest::Kind::top || request.kind == EigenRequest::Kind::bottom ? want : m;
  s.values.assign(w.begin() + skip, w.begin() + skip + keep);
  s.first_column = skip;
  return s;
}

template <typename T>
void lapack_syevd(const char* jobz, int n, T* a, int lda, T* w, T* work, int lwork, int* iwork, int liwork, int* info) {
  if constexpr (std::is_same_v<T, double>)
    dsyevd_(jobz, "L", &n, a, &lda, w, work, &lwork, iwork, &liwork, info);
  else
    ssyevd_(jobz, "L", &n, a, &lda, w, work, &lwork, iwork, &liwork, info);
}

template <typename T>
void lapack_syevr(int n, T* a, int lda, int il, int iu, int* m, T* w, T* z, int ldz, int* isuppz, T* work, int lwork,
                  int* iwork, int liwork, int* info) {
  const T zero = 0;
  if constexpr (std::is_same_v<T, double>)
    dsyevr_("V", "I", "L", &n, a, &lda, &zero, &zero, &il, &iu, &zero, m, w, z, &ldz, isuppz, work, &lwork, iwork,
            &liwork, info);
  else
    ssyevr_("V", "I", "L", &n, a, &lda, &zero, &zero, &il, &iu, &zero, m, w, z, &ldz, isuppz, work, &lwork, iwork,
            &liwork, info);
}

// One process holds H whole (a 1x1 grid's local storage is column-major n x n): LAPACK directly.
// All pairs: dsyevd overwrites H with the eigenvectors, so no second n x n matrix. Index ranges:
// dsyevr (MRRR) computes only the K vectors.
template <typename T>
Spectrum<T> run_lapack(const ProcessGrid& grid, BlockCyclicMatrix<T>& h, const EigenRequest& request) {
  const int n = static_cast<int>(h.rows());
  const int lda = static_cast<int>(h.lld());
  const bool single = std::is_same_v<T, float>;
  Spectrum<T> s;
  std::vector<T> w(n);
  T query = 0;
  int iquery = 0, info = 0;
  if (request.kind == EigenRequest::Kind::values || request.kind == EigenRequest::Kind::all) {
    const char* jobz = request.kind == EigenRequest::Kind::all ? "V" : "N";
    s.routine = single ? "ssyevd" : "dsyevd";
    lapack_syevd<T>(jobz, n, h.data(), lda, w.data(), &query, -1, &iquery, -1, &info);
    check_info(info, s.routine.c_str());
    std::vector<T> work(round_up(query, 0));
    std::vector<int> iwork(round_up(iquery, 0));
    lapack_syevd<T>(jobz, n, h.data(), lda, w.data(), work.data(), static_cast<int>(work.size()), iwork.data(),
                    static_cast<int>(iwork.size()), &info);
    check_info(info, s.routine.c_str());
    if (request.kind == EigenRequest::Kind::all) s.vectors = std::make_unique<BlockCyclicMatrix<T>>(std::move(h));
    s.values.assign(w.begin(), w.end());
    return s;
  }
  s.routine = single ? "ssyevr" : "dsyevr";
  const int k = static_cast<int>(request.k);
  const int il = request.kind == EigenRequest::Kind::top ? n - k + 1 : 1;
  const int iu = request.kind == EigenRequest::Kind::top ? n : k;
  s.vectors = std::make_unique<BlockCyclicMatrix<T>>(grid, h.rows(), k, h.row_block(), h.col_block());
  const int ldz = static_cast<int>(s.vectors->lld());
  std::vector<int> isuppz(2 * static_cast<std::size_t>(k));
  int m = 0;
  lapack_syevr<T>(n, h.data(), lda, il, iu, &m, w.data(), s.vectors->data(), ldz, isuppz.data(), &query, -1, &iquery,
                  -1, &info);
  check_info(info, s.routine.c_str());
  std::vector<T> work(round_up(query, 0));
  std::vector<int> iwork(round_up(iquery, 0));
  lapack_syevr<T>(n, h.data(), lda, il, iu, &m, w.data(), s.vectors->data(), ldz, isuppz.data(), work.data(),
                  static_cast<int>(work.size()), iwork.data(), static_cast<int>(iwork.size()), &info);
  check_info(info, s.routine.c_str());
  if (m != k)
    throw InternalError(s.routine + " returned " + std::to_string(m) + " eigenvalues, expected " + std::to_string(k));
  s.values.assign(w.begin(), w.begin() + k);
  return s;
}

}  // namespace

#ifndef DHESS_WITH_ELPA
bool elpa_available() { return false; }
template <typename T>
Spectrum<T> run_elpa(const ProcessGrid&, BlockCyclicMatrix<T>&, const EigenRequest&) {
  throw UsageError("--solver elpa: this dhess was built without ELPA");
}
#else
template <typename T>
Spectrum<T> run_elpa(const ProcessGrid& grid, BlockCyclicMatrix<T>& h, const EigenRequest& request);
#endif

namespace {

// The rank-revealing solver's answer where its sketch of up to `sketch_columns` vectors holds H's
// range and the request's eigenpairs are nonzero ones; unset otherwise, with `report` saying why.
std::optional<Spectrum<double>> try_lowrank(const ProcessGrid& grid, const BlockCyclicMatrix<double>& h,
                                            const EigenRequest& request, int64_t sketch_columns, const SketchTime& time,
                                            const ShardedOperator& products, LowRankReport& report) {
  const double t = MPI_Wtime();
  RangeFinderOptions options;
  options.max_columns = sketch_columns;
  options.seconds = time.seconds;
  options.refine = time.refine;
  options.vectors = request.wants_vectors();
  options.when_full = RangeFinderOptions::WhenFull::give_up;
  std::optional<Spectrum<double>> answer = lowrank_solve(grid, h, request, options, report, products);
  report.seconds = MPI_Wtime() - t;
  return answer;
}

// The full solvers (pdsyevd has no values-only mode and no index range: those go to pdsyevr).
template <typename T>
Spectrum<T> solve_full(const ProcessGrid& grid, BlockCyclicMatrix<T>& h, const EigenRequest& request, Solver solver) {
  switch (solver) {
    case Solver::elpa: return run_elpa(grid, h, request);
    case Solver::lapack: return run_lapack(grid, h, request);
    case Solver::pdsyevd:
      if (request.kind == EigenRequest::Kind::all) return run_pdsyevd(grid, h);
      return run_pdsyevr(grid, h, request);
    default: return run_pdsyevr(grid, h, request);
  }
}

}  // namespace

template <typename T>
Spectrum<T> solve(const ProcessGrid& grid, BlockCyclicMatrix<T>& h, const EigenRequest& request, Solver solver,
                  int64_t sketch_columns, const ShardedOperator& products, const SketchTime& time) {
  if (h.row_block() != h.col_block()) throw InternalError("the eigensolvers need square blocks");
  if (request.kind == EigenRequest::Kind::none) return {};
  if (solver == Solver::automatic) throw InternalError("solve() needs a resolved solver (resolve_solver)");
  check_eigen_request(request, h.rows());
  check_solver(solver, request, h.row_block(), grid.rows(), grid.cols(), h.rows());
  LowRankReport lowrank;
  if constexpr (std::is_same_v<T, double>) {
    if (sketch_columns > 0) {
      lowrank.tried = true;
      if (auto answer = try_lowrank(grid, h, request, sketch_columns, time, products, lowrank)) {
        answer->lowrank = lowrank;
        return std::move(*answer);
      }
    }
  }
  Spectrum<T> spectrum = solve_full(grid, h, request, solver == Solver::lowrank ? Solver::pdsyevr : solver);
  spectrum.lowrank = lowrank;
  return spectrum;
}

template Spectrum<double> solve(const ProcessGrid&, BlockCyclicMatrix<double>&, const EigenRequest&, Solver, int64_t,
                                const ShardedOperator&, const SketchTime&);
template Spectrum<float> solve(const ProcessGrid&, BlockCyclicMatrix<float>&, const EigenRequest&, Solver, int64_t,
                               const ShardedOperator&, const SketchTime&);

}  // namespace dhess
