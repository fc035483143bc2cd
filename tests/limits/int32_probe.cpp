// Probes where Debian's LP64 ScaLAPACK stops working as n grows on one process, for
// tests/limits/test_int32_limits.py (each probe runs in its own process: past a limit it may crash).
//
//   int32_probe index N           pslaset_ on element (N, N) of an N x N float32 matrix: "ok" when it
//                                 lands there, "wrong" when the driver's 32-bit offset A(IIA+(JJA-1)*LDA)
//                                 wrapped (or the process dies)
//   int32_probe lwork SOLVER N    the workspace query of pdsyevd ("all"), pdsyevr-values or
//                                 pdsyevr-vectors: prints LWORK as ScaLAPACK computed it
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
int Csys2blacs_handle(MPI_Comm comm);
void Cblacs_gridinit(int* context, const char* order, int nprow, int npcol);
void Cblacs_gridexit(int context);
void descinit_(int* desc, const int* m, const int* n, const int* mb, const int* nb, const int* irsrc,
               const int* icsrc, const int* ictxt, const int* lld, int* info);
void pslaset_(const char* uplo, const int* m, const int* n, const float* alpha, const float* beta, float* a,
              const int* ia, const int* ja, const int* desca);
void pdsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* ia, const int* ja,
              const int* desca, double* w, double* z, const int* iz, const int* jz, const int* descz, double* work,
              const int* lwork, int* iwork, const int* liwork, int* info);
void pdsyevr_(const char* jobz, const char* range, const char* uplo, const int* n, double* a, const int* ia,
              const int* ja, const int* desca, const double* vl, const double* vu, const int* il, const int* iu,
              int* m, int* nz, double* w, double* z, const int* iz, const int* jz, const int* descz, double* work,
              const int* lwork, int* iwork, const int* liwork, int* info);
}

namespace {

int context() {
  int ctx = Csys2blacs_handle(MPI_COMM_WORLD);
  Cblacs_gridinit(&ctx, "R", 1, 1);
  return ctx;
}

void describe(int* desc, int n, int ctx) {
  const int nb = 64, zero = 0;
  int info = 0;
  descinit_(desc, &n, &n, &nb, &nb, &zero, &zero, &ctx, &n, &info);
  if (info != 0) std::printf("descinit info %d\n", info);
}

int index_probe(int n) {
  const int ctx = context();
  int desc[9];
  describe(desc, n, ctx);
  // Untouched pages cost nothing: only the one element pslaset writes becomes resident.
  auto* a = static_cast<float*>(std::malloc(static_cast<std::size_t>(n) * n * sizeof(float)));
  const std::size_t last = static_cast<std::size_t>(n) * n - 1;
  a[last] = 0;
  const int one = 1;
  const float seven = 7;
  pslaset_("A", &one, &one, &seven, &seven, a, &n, &n, desc);
  std::printf("%s\n", a[last] == seven ? "ok" : "wrong");
  Cblacs_gridexit(ctx);
  return 0;
}

int lwork_probe(const std::string& solver, int n) {
  const int ctx = context();
  int desc[9];
  describe(desc, n, ctx);
  double a = 0, w = 0, z = 0, query = 0, zero = 0;
  int iquery = 0, info = 0, m = 0, nz = 0, one = 1, minus = -1;
  if (solver == "pdsyevd")
    pdsyevd_("V", "L", &n, &a, &one, &one, desc, &w, &z, &one, &one, desc, &query, &minus, &iquery, &minus, &info);
  else
    pdsyevr_(solver == "pdsyevr-vectors" ? "V" : "N", "A", "L", &n, &a, &one, &one, desc, &zero, &zero, &one, &n, &m,
             &nz, &w, &z, &one, &one, desc, &query, &minus, &iquery, &minus, &info);
  std::printf("%.0f %d\n", query, info);
  Cblacs_gridexit(ctx);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int code = 2;
  if (argc == 3 && std::strcmp(argv[1], "index") == 0) code = index_probe(std::atoi(argv[2]));
  if (argc == 4 && std::strcmp(argv[1], "lwork") == 0) code = lwork_probe(argv[2], std::atoi(argv[3]));
  MPI_Finalize();
  return code;
}
