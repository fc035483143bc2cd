// ELPA eigensolver backend: 2-stage for eigenvalues only, 1-stage when eigenvectors
// are wanted. ELPA's header declares elpa_strerr outside its own extern "C" block;
// declaring it first with C linkage keeps it linkable.
#include <algorithm>
#include <complex>
#include <cstdlib>
#include <string>

#include "dhess/core/errors.hpp"
#include "dhess/linalg/eigensolver.hpp"

extern "C" const char* elpa_strerr(int elpa_error);
#include <elpa/elpa.h>

namespace dhess {

bool elpa_available() { return true; }

namespace {

// One ELPA handle; the library is initialised once per process.
class ElpaHandle {
 public:
  ElpaHandle() {
    static const int init = elpa_init(ELPA_API_VERSION);
    if (init != ELPA_OK) throw InternalError("ELPA API version " + std::to_string(ELPA_API_VERSION) + " not supported");
    int error = 0;
    handle_ = elpa_allocate(&error);
    check(error, "elpa_allocate");
  }
  ~ElpaHandle() {
    int error = 0;
    elpa_deallocate(handle_, &error);
  }
  ElpaHandle(const ElpaHandle&) = delete;
  ElpaHandle& operator=(const ElpaHandle&) = delete;

  void set(const char* name, int value) {
    int error = 0;
    elpa_set_integer(handle_, name, value, &error);
    check(error, name);
  }
  elpa_t get() const { return handle_; }
  static void check(int error, const std::string& what) {
    if (error != ELPA_OK) throw InternalError("ELPA " + what + " failed: " + elpa_strerr(error));
  }

 private:
  elpa_t handle_ = nullptr;
};

}  // namespace

template <typename T>
Spectrum<T> run_elpa(const ProcessGrid& grid, BlockCyclicMatrix<T>& h, const EigenRequest& request) {
  const int64_t n = h.rows();
  const bool top = request.kind == EigenRequest::Kind::top;
  // ELPA returns the lowest nev eigenpairs: the top K of H are the bottom K of -H.
  if (top)
    for (int64_t j = 0; j < h.local_cols(); ++j)
      for (int64_t i = 0; i < h.local_rows(); ++i) h.at_local(i, j) = -h.at_local(i, j);
  const int nev = static_cast<int>(request.count(n));
  ElpaHandle e;
  e.set("na", static_cast<int>(n));
  e.set("nev", nev);
  e.set("local_nrows", static_cast<int>(h.local_rows()));
  e.set("local_ncols", static_cast<int>(h.local_cols()));
  e.set("nblk", h.row_block());
  e.set("mpi_comm_parent", static_cast<int>(MPI_Comm_c2f(grid.comm())));
  e.set("process_row", grid.my_row());
  e.set("process_col", grid.my_col());
  e.set("blacs_context", grid.context());
  ElpaHandle::check(elpa_setup(e.get()), "elpa_setup");
  // Debian's libelpa has only the generic (non-SIMD) 2-stage back-transformation kernels, which
  // made 2-stage eigenvectors 2-3x slower than 1-stage here; without vectors 2-stage is fastest
  // (bench/RESULTS.md, section c).
  const bool one_stage = request.wants_vectors();
  e.set("solver", one_stage ? ELPA_SOLVER_1STAGE : ELPA_SOLVER_2STAGE);

  Spectrum<T> s;
  s.routine = one_stage ? "elpa1" : "elpa2";
  std::vector<T> w(n);
  int error = 0;
  if (request.wants_vectors()) {
    s.vectors = std::make_unique<BlockCyclicMatrix<T>>(grid, n, n, h.row_block(), h.col_block());
    if constexpr (std::is_same_v<T, double>)
      elpa_eigenvectors_a_h_a_d(e.get(), h.data(), w.data(), s.vectors->data(), &error);
    else
      elpa_eigenvectors_a_h_a_f(e.get(), h.data(), w.data(), s.vectors->data(), &error);
  } else {
    if constexpr (std::is_same_v<T, double>)
      elpa_eigenvalues_a_h_a_d(e.get(), h.data(), w.data(), &error);
    else
      elpa_eigenvalues_a_h_a_f(e.get(), h.data(), w.data(), &error);
  }
  ElpaHandle::check(error, "eigensolver");
  s.values.assign(w.begin(), w.begin() + nev);
  if (top) {
    // Undo the negation: values ascending, vector columns in the same order.
    for (auto& v : s.values) v = -v;
    std::reverse(s.values.begin(), s.values.end());
    if (s.vectors) {
      auto reversed = std::make_unique<BlockCyclicMatrix<T>>(grid, n, n, h.row_block(), h.col_block());
      for (int j = 0; j < nev; ++j)
        redistribute<T>(n, 1, s.vectors->data(), 0, j, s.vectors->desc(), reversed->data(), 0, nev - 1 - j,
                        reversed->desc(), grid.context());
      s.vectors = std::move(reversed);
    }
  }
  return s;
}

template Spectrum<double> run_elpa(const ProcessGrid&, BlockCyclicMatrix<double>&, const EigenRequest&);
template Spectrum<float> run_elpa(const ProcessGrid&, BlockCyclicMatrix<float>&, const EigenRequest&);

}  // namespace dhess
