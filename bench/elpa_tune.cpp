// Eigensolver tuning bench (not part of dhess or ctest): times ScaLAPACK pdsyevd/pdsyevr and
// ELPA with chosen settings on one block-cyclic matrix, and checks the eigenvalues agree.
// mpirun -n P elpa_tune N NB SOLVER JOB [KERNEL] [matrix.npy]
//   SOLVER: pdsyevd | pdsyevr | pdsyevr_min (workspace below the serial-gather threshold) | elpa1 | elpa2
//     JOB: values | all
//   KERNEL: ELPA 2-stage real kernel id (elpa_constants.h), 0 = library default
//   matrix.npy: a float64 n x n symmetric matrix (else a seeded random symmetric one)
// Prints one JSON line on rank 0.
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

extern "C" const char* elpa_strerr(int elpa_error);
#include <elpa/elpa.h>

extern "C" {
int Csys2blacs_handle(MPI_Comm comm);
void Cblacs_gridinit(int* context, const char* order, int nprow, int npcol);
void Cblacs_gridinfo(int context, int* nprow, int* npcol, int* myrow, int* mycol);
void Cblacs_gridexit(int context);
int numroc_(const int* n, const int* nb, const int* iproc, const int* isrcproc, const int* nprocs);
void descinit_(int* desc, const int* m, const int* n, const int* mb, const int* nb, const int* irsrc,
               const int* icsrc, const int* ictxt, const int* lld, int* info);
void pdsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* ia, const int* ja,
              const int* desca, double* w, double* z, const int* iz, const int* jz, const int* descz,
              double* work, const int* lwork, int* iwork, const int* liwork, int* info);
void pdsyevr_(const char* jobz, const char* range, const char* uplo, const int* n, double* a, const int* ia,
              const int* ja, const int* desca, const double* vl, const double* vu, const int* il, const int* iu,
              int* m, int* nz, double* w, double* z, const int* iz, const int* jz, const int* descz,
              double* work, const int* lwork, int* iwork, const int* liwork, int* info);
void openblas_set_num_threads(int);
}

static double entry(int64_t i, int64_t j) {
  if (i > j) std::swap(i, j);
  uint64_t z = static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(j) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) / 9007199254740992.0 - 0.5;
}

static double status_mb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::atof(line.c_str() + std::strlen(key)) / 1024.0;
  return 0;
}

static void reset_peak() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc < 5) {
    if (rank == 0) std::fprintf(stderr, "usage: elpa_tune N NB SOLVER JOB [KERNEL] [matrix.npy]\n");
    MPI_Finalize();
    return 2;
  }
  openblas_set_num_threads(1);
  const int n = std::atoi(argv[1]), nb = std::atoi(argv[2]);
  const std::string solver = argv[3], job = argv[4];
  const int kernel = argc > 5 ? std::atoi(argv[5]) : 0;
  const std::string file = argc > 6 ? argv[6] : "";
  int pr = 1;
  for (int p = 1; p * p <= size; ++p)
    if (size % p == 0) pr = p;
  const int pc = size / pr;
  int ctx = Csys2blacs_handle(MPI_COMM_WORLD);
  Cblacs_gridinit(&ctx, "C", pr, pc);
  int nprow, npcol, myrow, mycol, zero = 0, info = 0;
  Cblacs_gridinfo(ctx, &nprow, &npcol, &myrow, &mycol);
  const int lr = numroc_(&n, &nb, &myrow, &zero, &nprow), lc = numroc_(&n, &nb, &mycol, &zero, &npcol);
  int lld = std::max(1, lr), desc[9];
  descinit_(desc, &n, &n, &nb, &nb, &zero, &zero, &ctx, &lld, &info);
  std::vector<double> a(static_cast<size_t>(lr) * lc), z(a.size()), w(n);
  std::vector<double> full;
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    char magic[10];
    in.read(magic, 10);
    uint16_t hl = static_cast<uint8_t>(magic[8]) | (static_cast<uint8_t>(magic[9]) << 8);
    in.seekg(10 + hl);
    full.resize(static_cast<size_t>(n) * n);
    in.read(reinterpret_cast<char*>(full.data()), full.size() * 8);
    if (!in) {
      std::fprintf(stderr, "cannot read %d x %d float64 from %s\n", n, n, file.c_str());
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
  }
  for (int lj = 0; lj < lc; ++lj) {
    int64_t j = (static_cast<int64_t>(lj / nb) * npcol + mycol) * nb + lj % nb;
    for (int li = 0; li < lr; ++li) {
      int64_t i = (static_cast<int64_t>(li / nb) * nprow + myrow) * nb + li % nb;
      a[static_cast<size_t>(lj) * lr + li] = full.empty() ? entry(i, j) : full[static_cast<size_t>(i) * n + j];
    }
  }
  full.clear();
  full.shrink_to_fit();
  MPI_Barrier(MPI_COMM_WORLD);
  const double rss_before = status_mb("VmRSS:");
  reset_peak();
  double work_mb = 0;
  const bool vectors = job == "all";
  double t0 = MPI_Wtime();
  int one = 1, minus1 = -1;
  std::string note;
  if (solver == "pdsyevd") {
    double q = 0;
    int iq = 0;
    pdsyevd_("V", "L", &n, a.data(), &one, &one, desc, w.data(), z.data(), &one, &one, desc, &q, &minus1, &iq, &minus1, &info);
    int lwork = static_cast<int>(q * 1.1 + 1024), liwork = std::max(iq, 7 * n + 8 * npcol + 2) + 1024;
    std::vector<double> work(lwork);
    std::vector<int> iwork(liwork);
    work_mb = (8.0 * lwork + 4.0 * liwork) / 1048576.0;
    t0 = MPI_Wtime();
    pdsyevd_("V", "L", &n, a.data(), &one, &one, desc, w.data(), z.data(), &one, &one, desc, work.data(), &lwork,
             iwork.data(), &liwork, &info);
  } else if (solver == "pdsyevr" || solver == "pdsyevr_min") {
    double q = 0, vl = 0, vu = 0;
    int iq = 0, m = 0, nz = 0, il = 1, iu = n;
    const char* jz = vectors ? "V" : "N";
    pdsyevr_(jz, "A", "L", &n, a.data(), &one, &one, desc, &vl, &vu, &il, &iu, &m, &nz, w.data(), z.data(), &one,
             &one, desc, &q, &minus1, &iq, &minus1, &info);
    int lwork = static_cast<int>(q * 1.1 + 1024), liwork = iq + 1024;
    if (solver == "pdsyevr_min") {
      // Below PDSYNTRD's N*N+3N+1 threshold: no gather onto a sqrt(P) x sqrt(P) (here 1x1) grid,
      // the distributed PDSYTRD path on the whole grid instead.
      const long np = numroc_(&n, &nb, &myrow, &zero, &nprow);
      const long need = 5L * n + 3 + std::max<long>(12L * n, (np + 1) * nb) + 3L * nb + 1024;
      lwork = static_cast<int>(vectors ? std::max<long>(need, static_cast<long>(q * 1.1 + 1024) - static_cast<long>(n) * n)
                                       : need);
    }
    std::vector<double> work(lwork);
    std::vector<int> iwork(liwork);
    work_mb = (8.0 * lwork + 4.0 * liwork) / 1048576.0;
    t0 = MPI_Wtime();
    pdsyevr_(jz, "A", "L", &n, a.data(), &one, &one, desc, &vl, &vu, &il, &iu, &m, &nz, w.data(), z.data(), &one,
             &one, desc, work.data(), &lwork, iwork.data(), &liwork, &info);
  } else {
    if (elpa_init(ELPA_API_VERSION) != ELPA_OK) MPI_Abort(MPI_COMM_WORLD, 3);
    int err = 0;
    elpa_t e = elpa_allocate(&err);
    elpa_set_integer(e, "na", n, &err);
    elpa_set_integer(e, "nev", n, &err);
    elpa_set_integer(e, "local_nrows", lr, &err);
    elpa_set_integer(e, "local_ncols", lc, &err);
    elpa_set_integer(e, "nblk", nb, &err);
    elpa_set_integer(e, "mpi_comm_parent", static_cast<int>(MPI_Comm_c2f(MPI_COMM_WORLD)), &err);
    elpa_set_integer(e, "process_row", myrow, &err);
    elpa_set_integer(e, "process_col", mycol, &err);
    elpa_set_integer(e, "blacs_context", ctx, &err);
    if (elpa_setup(e) != ELPA_OK) MPI_Abort(MPI_COMM_WORLD, 4);
    elpa_set_integer(e, "solver", solver == "elpa1" ? ELPA_SOLVER_1STAGE : ELPA_SOLVER_2STAGE, &err);
    if (kernel > 0) {
      elpa_set_integer(e, "real_kernel", kernel, &err);
      if (err != ELPA_OK) note = std::string("kernel rejected: ") + elpa_strerr(err);
    }
    int used = 0;
    elpa_get_integer(e, "real_kernel", &used, &err);
    note += (note.empty() ? "" : "; ") + std::string("real_kernel=") + std::to_string(used);
    for (const char* key : {"omp_threads", "qr", "gpu", "debug"}) {
      int v = -1;
      elpa_get_integer(e, key, &v, &err);
      note += std::string(", ") + key + "=" + (err == ELPA_OK ? std::to_string(v) : "n/a");
    }
    t0 = MPI_Wtime();
    if (vectors)
      elpa_eigenvectors_a_h_a_d(e, a.data(), w.data(), z.data(), &err);
    else
      elpa_eigenvalues_a_h_a_d(e, a.data(), w.data(), &err);
    info = err;
    elpa_deallocate(e, &err);
  }
  double t = MPI_Wtime() - t0, tmax = 0;
  const double solver_mb = status_mb("VmHWM:") - rss_before;
  MPI_Reduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    double sum = 0;
    for (double v : w) sum += v;
    const double flops = (vectors ? 10.0 : 4.0) / 3.0 * std::pow(static_cast<double>(n), 3);
    std::printf("{\"n\": %d, \"nb\": %d, \"ranks\": %d, \"solver\": \"%s\", \"job\": \"%s\", \"kernel\": %d, "
                "\"seconds\": %.4f, \"gflops\": %.2f, \"info\": %d, \"lambda_min\": %.12g, \"lambda_max\": %.12g, "
                "\"lambda_sum\": %.12g, \"matrix_mb\": %.1f, \"workspace_query_mb\": %.1f, "
                "\"peak_above_start_mb_rank0\": %.1f, \"note\": \"%s\"}\n",
                n, nb, size, solver.c_str(), job.c_str(), kernel, tmax, flops / tmax / 1e9, info, w[0], w[n - 1], sum,
                8.0 * a.size() / 1048576.0, work_mb, solver_mb, note.c_str());
  }
  Cblacs_gridexit(ctx);
  MPI_Finalize();
  return 0;
}
