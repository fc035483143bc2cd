// Eigensolvers on the oracle Hessian (loaded from numpy, not computed by dhess)
// against numpy.linalg.eigvalsh and the definition H z = λ z.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "dhess/app/parse.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/dense/assembler.hpp"
#include "dhess/linalg/eigensolver.hpp"
#include "dhess/matfree/lanczos.hpp"
#include "dhess/matfree/trace.hpp"
#include "test_support.hpp"

namespace dhess {
namespace {

using test::oracle;

template <typename T>
BlockCyclicMatrix<T> distribute(const ProcessGrid& grid, const NpyArray& a, int block) {
  const int64_t n = a.shape.at(0);
  BlockCyclicMatrix<T> m(grid, n, n, block, block);
  for (int64_t lj = 0; lj < m.local_cols(); ++lj)
    for (int64_t li = 0; li < m.local_rows(); ++li)
      m.at_local(li, lj) = static_cast<T>(a.data[m.global_row(li) * n + m.global_col(lj)]);
  return m;
}

struct Verdict {
  double values = 0;         // max |λ - λ_numpy| / max|λ|
  double residual = 0;       // max ‖H z − λ z‖ / ‖H‖
  double orthogonality = 0;  // max |ZᵀZ − I|
};

// Checks a spectrum against eigvalsh and the oracle matrix itself.
template <typename T>
Verdict check(const Spectrum<T>& s, const NpyArray& h, const NpyArray& eig, int64_t offset) {
  const int64_t n = h.shape.at(0), m = static_cast<int64_t>(s.values.size());
  Verdict v;
  double scale = std::max(std::abs(eig.data.front()), std::abs(eig.data.back()));
  for (int64_t i = 0; i < m; ++i) v.values = std::max(v.values, std::abs(s.values[i] - eig.data[offset + i]) / scale);
  if (!s.vectors) return v;
  // Gather the m eigenvectors on every rank (small test sizes).
  std::vector<double> local(n * m, 0.0), z(n * m, 0.0);
  const auto& zm = *s.vectors;
  for (int64_t lj = 0; lj < zm.local_cols(); ++lj) {
    int64_t j = zm.global_col(lj) - s.first_column;
    if (j < 0 || j >= m) continue;
    for (int64_t li = 0; li < zm.local_rows(); ++li) local[j * n + zm.global_row(li)] = zm.at_local(li, lj);
  }
  MPI_Allreduce(local.data(), z.data(), static_cast<int>(z.size()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  for (int64_t j = 0; j < m; ++j) {
    double r = 0;
    for (int64_t i = 0; i < n; ++i) {
      double hz = 0;
      for (int64_t k = 0; k < n; ++k) hz += h.data[i * n + k] * z[j * n + k];
      r += std::pow(hz - s.values[j] * z[j * n + i], 2);
    }
    v.residual = std::max(v.residual, std::sqrt(r) / scale);
    for (int64_t k = 0; k <= j; ++k) {
      double d = 0;
      for (int64_t i = 0; i < n; ++i) d += z[j * n + i] * z[k * n + i];
      v.orthogonality = std::max(v.orthogonality, std::abs(d - (j == k ? 1.0 : 0.0)));
    }
  }
  return v;
}

struct Case {
  std::string request;
  Solver solver;
  int block;
  int64_t sketch_columns = 0;  // the rank-revealing sketch's bound (0: none)
};

void run_case(const Case& c, int rows, int cols) {
  NpyArray h = read_npy(oracle("convnet_H.npy"));
  NpyArray eig = read_npy(oracle("convnet_eig.npy"));
  const int64_t n = h.shape[0];
  ProcessGrid grid(MPI_COMM_WORLD, rows, cols);
  auto a = distribute<double>(grid, h, c.block);
  EigenRequest request = parse_eigen_request(c.request);
  Spectrum<double> s = solve(grid, a, request, c.solver, c.sketch_columns);
  if (c.sketch_columns > 0) {
    EXPECT_EQ(s.routine, "lowrank") << c.request;
    EXPECT_TRUE(s.lowrank.answered) << c.request << ": " << s.lowrank.why_not;
  }
  ASSERT_EQ(static_cast<int64_t>(s.values.size()), request.count(n));
  int64_t offset = request.kind == EigenRequest::Kind::top ? n - request.k : 0;
  Verdict v = check(s, h, eig, offset);
  const std::string what = c.request + " " + solver_name(c.solver) + " grid " + std::to_string(rows) + "x" +
                           std::to_string(cols) + " block " + std::to_string(c.block);
  EXPECT_LE(v.values, 1e-9) << what;
  if (request.wants_vectors()) {
    ASSERT_TRUE(s.vectors) << what;
    EXPECT_LE(v.residual, 1e-8) << what;
    EXPECT_LE(v.orthogonality, 1e-8) << what;
  } else {
    EXPECT_FALSE(s.vectors) << what << ": values only must not allocate eigenvectors";
  }
}

std::vector<std::pair<int, int>> grids() {
  const int p = test::world_size();
  std::vector<std::pair<int, int>> g = {{1, p}, {p, 1}};
  if (p == 4) g.emplace_back(2, 2);
  return g;
}

TEST(Eigen, AllEigenpairsWithPdsyevdMatchNumpy) {
  for (auto [r, c] : grids()) run_case({"all", Solver::pdsyevd, 16}, r, c);
  run_case({"all", Solver::pdsyevd, 7}, 1, test::world_size());
}

TEST(Eigen, ValuesOnlyWithPdsyevrMatchNumpy) {
  for (auto [r, c] : grids()) run_case({"values", Solver::pdsyevr, 16}, r, c);
}

TEST(Eigen, TopAndBottomKMatchTheFullSpectrum) {
  for (auto [r, c] : grids()) {
    run_case({"top:5", Solver::pdsyevr, 16}, r, c);
    run_case({"bottom:7", Solver::pdsyevr, 5}, r, c);
  }
  run_case({"top:40", Solver::pdsyevr, 16}, 1, test::world_size());
}

// The rank-revealing solver with H·Ω by pdgemm on the assembled matrix (the dense run passes
// Hessian-vector products instead): the convnet oracle's Hessian has rank 92 of 343, 40 negative.
TEST(Eigen, LowRankByPdgemmMatchesNumpy) {
  for (auto [r, c] : grids()) {
    run_case({"values", Solver::lowrank, 16, 256}, r, c);
    run_case({"top:4", Solver::lowrank, 16, 256}, r, c);
    run_case({"bottom:3", Solver::lowrank, 8, 256}, r, c);
  }
}

// A closed-form spectrum the sketch must find whole: H = V diag(λ) Vᵀ over the orthonormal DCT-II
// basis, with one eigenvalue of multiplicity 100 -- more than a round's first 64 vectors, and
// than the basis vectors a round multiplies again (their products cannot leave an eigenspace:
// only the rounds' fresh Gaussian vectors reach the rest of it) -- beside 30 distinct positive and
// 20 negative ones; the other 350 are zero.
TEST(Eigen, LowRankFindsAnEigenvalueOfHighMultiplicity) {
  const int64_t n = 500;
  std::vector<double> lambda(static_cast<std::size_t>(n), 0.0);
  for (int64_t j = 0; j < 100; ++j) lambda[j] = 1.0;
  for (int64_t j = 0; j < 30; ++j) lambda[100 + j] = 0.1 + 0.02 * static_cast<double>(j);
  for (int64_t j = 0; j < 20; ++j) lambda[130 + j] = -0.05 - 0.01 * static_cast<double>(j);
  NpyArray h{{n, n}, std::vector<double>(static_cast<std::size_t>(n * n), 0.0)};
  auto basis = [&](int64_t i, int64_t j) {
    return (j == 0 ? std::sqrt(1.0 / n) : std::sqrt(2.0 / n)) * std::cos(M_PI * (i + 0.5) * j / n);
  };
  for (int64_t j = 0; j < 150; ++j)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < n; ++k) h.data[i * n + k] += lambda[j] * basis(i, j) * basis(k, j);
  std::vector<double> expected = lambda;
  std::sort(expected.begin(), expected.end());
  for (auto [r, c] : grids()) {
    ProcessGrid grid(MPI_COMM_WORLD, r, c);
    auto a = distribute<double>(grid, h, 16);
    Spectrum<double> s = solve(grid, a, parse_eigen_request("values"), Solver::lowrank, 400);
    ASSERT_TRUE(s.lowrank.answered) << s.lowrank.why_not;
    EXPECT_EQ(s.lowrank.rank, 150);
    ASSERT_EQ(static_cast<int64_t>(s.values.size()), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(s.values[i], expected[i], 1e-12) << i;
  }
}

TEST(Eigen, ElpaPassesTheSameChecks) {
  if (!elpa_available()) GTEST_SKIP() << "built without ELPA";
  for (auto [r, c] : grids()) {
    run_case({"all", Solver::elpa, 16}, r, c);
    run_case({"values", Solver::elpa, 16}, r, c);
    run_case({"top:5", Solver::elpa, 16}, r, c);
    run_case({"bottom:5", Solver::elpa, 8}, r, c);
  }
}

TEST(Eigen, LapackOnOneProcessPassesTheSameChecks) {
  if (test::world_size() != 1) {
    // More than one process: refused before any work, with the rank count named.
    ProcessGrid grid(MPI_COMM_WORLD, 1, test::world_size());
    EXPECT_THROW(check_solver(Solver::lapack, parse_eigen_request("values"), 16, 1, test::world_size(), 343),
                 UsageError);
    auto a = distribute<double>(grid, read_npy(oracle("convnet_H.npy")), 16);
    EXPECT_THROW(solve(grid, a, parse_eigen_request("values"), Solver::lapack), UsageError);
    return;
  }
  run_case({"all", Solver::lapack, 16}, 1, 1);
  run_case({"values", Solver::lapack, 7}, 1, 1);
  run_case({"top:5", Solver::lapack, 16}, 1, 1);
  run_case({"bottom:7", Solver::lapack, 5}, 1, 1);
  run_case({"top:1", Solver::lapack, 16}, 1, 1);
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("all"), 16, 1, 1, 343), Solver::lapack);
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("top:3"), 16, 1, 1, 343), Solver::lapack);
  // Past LAPACK's 32-bit workspace (1 + 6n + 2n² > 2^31 - 1) all pairs go to ScaLAPACK.
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("all"), 64, 1, 1, 40000), Solver::pdsyevd);
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("top:3"), 64, 1, 1, 50000), Solver::pdsyevr);
  EXPECT_THROW(check_solver(Solver::lapack, parse_eigen_request("all"), 64, 1, 1, 40000), UsageError);
  EXPECT_NO_THROW(check_solver(Solver::lapack, parse_eigen_request("values"), 64, 1, 1, 40000));
  EXPECT_THROW(check_solver(Solver::lapack, parse_eigen_request("values"), 64, 1, 1, 50000), UsageError);
  EXPECT_EQ(choose_solver(Solver::automatic, parse_eigen_request("all"), 16, 1, 2, 343),
            elpa_available() ? Solver::elpa : Solver::pdsyevd);
}

TEST(Eigen, Float32AgreesWithFloat64ToSinglePrecision) {
  NpyArray h = read_npy(oracle("convnet_H.npy"));
  NpyArray eig = read_npy(oracle("convnet_eig.npy"));
  ProcessGrid grid(MPI_COMM_WORLD, 1, test::world_size());
  std::vector<Solver> solvers = {Solver::pdsyevd, Solver::pdsyevr};
  if (test::world_size() == 1) solvers.push_back(Solver::lapack);
  for (Solver solver : solvers) {
    auto a = distribute<float>(grid, h, 16);
    Spectrum<float> s = solve(grid, a, parse_eigen_request("all"), solver);
    Verdict v = check(s, h, eig, 0);
    EXPECT_LE(v.values, 1e-5) << solver_name(solver);
    EXPECT_LE(v.residual, 1e-4) << solver_name(solver);
    EXPECT_LE(v.orthogonality, 1e-4) << solver_name(solver);
  }
}

TEST(Eigen, SymmetrizeReportsAsymmetryAndAverages) {
  // H + E with E antisymmetric: asymmetry = ‖2E‖/‖H+E‖ and the result is H.
  NpyArray h = read_npy(oracle("convnet_H.npy"));
  const int64_t n = h.shape[0];
  NpyArray perturbed = h;
  double e2 = 0, total2 = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double e = i == j ? 0.0 : 1e-3 * std::sin(static_cast<double>(i * 31 + j * 17)) * (i < j ? 1 : 0);
      perturbed.data[i * n + j] += e;
      perturbed.data[j * n + i] -= e;
    }
  for (int64_t i = 0; i < n * n; ++i) {
    double e = perturbed.data[i] - h.data[i];
    e2 += 4 * e * e;
    total2 += perturbed.data[i] * perturbed.data[i];
  }
  for (auto [r, c] : grids()) {
    ProcessGrid grid(MPI_COMM_WORLD, r, c);
    auto a = distribute<double>(grid, perturbed, 7);
    SymmetryStats stats = symmetrize(grid, a);
    EXPECT_NEAR(stats.asymmetry, std::sqrt(e2 / total2), 1e-12);
    EXPECT_LE(test::relative_difference(a, h), 1e-14);
    EXPECT_NEAR(
        trace(grid, a),
        [&] {
          double t = 0;
          for (int64_t i = 0; i < n; ++i) t += h.data[i * n + i];
          return t;
        }(),
        1e-10);
  }
}

TEST(Eigen, SymmetrizeMirrorsTheLowerTriangleWhereOnlyItWasComputed) {
  // Columns hold the rows from their parameter's first on (HvpEngine::columns): above those the
  // upper entries are garbage and H comes from the lower triangle; the pairs computed twice are
  // averaged, and they alone make the asymmetry.
  NpyArray h = read_npy(oracle("convnet_H.npy"));
  const int64_t n = h.shape[0];
  const std::vector<int64_t> offsets = {0, n / 7, n / 7 + 3, n / 2, n - 5};
  auto first_row = [&](int64_t j) {
    int64_t f = 0;
    for (int64_t o : offsets) f = o <= j ? o : f;
    return f;
  };
  NpyArray given = h;
  double e2 = 0, norm2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    norm2 += h.data[i * n + i] * h.data[i * n + i];
    for (int64_t j = i + 1; j < n; ++j) {
      const double lower = h.data[j * n + i];
      if (i < first_row(j)) {
        given.data[i * n + j] = 1e3 * std::cos(static_cast<double>(i + 2 * j));
        norm2 += 2 * lower * lower;
        continue;
      }
      const double e = 1e-3 * std::sin(static_cast<double>(i * 31 + j * 17));
      given.data[i * n + j] += e;
      given.data[j * n + i] -= e;
      e2 += 8 * e * e;
      norm2 += given.data[i * n + j] * given.data[i * n + j] + given.data[j * n + i] * given.data[j * n + i];
    }
  }
  for (auto [r, c] : grids()) {
    ProcessGrid grid(MPI_COMM_WORLD, r, c);
    auto a = distribute<double>(grid, given, 7);
    SymmetryStats stats = symmetrize(grid, a, offsets);
    EXPECT_NEAR(stats.asymmetry, std::sqrt(e2 / norm2), 1e-12);
    EXPECT_NEAR(stats.frobenius, std::sqrt(norm2), 1e-10 * std::sqrt(norm2));
    EXPECT_LE(test::relative_difference(a, h), 1e-14);
  }
}

// The oracle H as a row-sharded operator: each vector gathered whole, this rank's rows of H·x.
ShardedOperator oracle_operator(const NpyArray& h, const RowShard& shard) {
  return [&h, shard](const double* x, int64_t k, double* y) {
    const int64_t n = shard.n, rows = shard.rows();
    const ShardCounts sc(n, MPI_COMM_WORLD);
    std::vector<double> whole(static_cast<std::size_t>(n));
    for (int64_t c = 0; c < k; ++c) {
      MPI_Allgatherv(x + c * rows, static_cast<int>(rows), MPI_DOUBLE, whole.data(), sc.counts.data(), sc.displs.data(),
                     MPI_DOUBLE, MPI_COMM_WORLD);
      for (int64_t i = 0; i < rows; ++i) {
        double sum = 0;
        for (int64_t j = 0; j < n; ++j) sum += h.data[(shard.begin + i) * n + j] * whole[j];
        y[c * rows + i] = sum;
      }
    }
  };
}

TEST(MatrixFree, TraceProbesInChunksGiveTheSameEstimates) {
  const NpyArray h = read_npy(oracle("convnet_H.npy"));
  const RowShard shard = RowShard::of(h.shape.at(0), test::world_rank(), test::world_size());
  const ShardedOperator op = oracle_operator(h, shard);
  for (auto estimate : {hutchinson_trace, hutchpp_trace}) {
    const TraceEstimate whole = estimate(op, shard, 30, 30, 3, MPI_COMM_WORLD);
    const TraceEstimate chunked = estimate(op, shard, 30, 4, 3, MPI_COMM_WORLD);
    EXPECT_NEAR(chunked.value, whole.value, 1e-12 * std::abs(whole.value));
    EXPECT_NEAR(chunked.stderr_value, whole.stderr_value, 1e-12 * whole.stderr_value);
    EXPECT_EQ(chunked.products, whole.products);
    EXPECT_GT(whole.stderr_value, 0);
  }
}

TEST(MatrixFree, RestartedLanczosFindsTheExtremesOfNumpy) {
  const NpyArray h = read_npy(oracle("convnet_H.npy")), eig = read_npy(oracle("convnet_eig.npy"));
  const int64_t n = h.shape.at(0);
  const RowShard shard = RowShard::of(n, test::world_rank(), test::world_size());
  LanczosOptions o;
  o.top = 2;
  o.bottom = 1;
  // 8 vectors for pairs at both ends, the bottom two 0.4% apart: 451 products (40 unrestarted).
  o.basis = 8;
  o.max_steps = 3000;
  const LanczosResult r = lanczos_extremes(oracle_operator(h, shard), shard, o, MPI_COMM_WORLD);
  EXPECT_GT(r.restarts, 0);
  ASSERT_EQ(r.pairs.size(), 3u);
  const double scale = std::max(std::abs(eig.data.front()), std::abs(eig.data.back()));
  EXPECT_NEAR(r.pairs[0].value, eig.data[0], 1e-8 * scale);
  EXPECT_NEAR(r.pairs[1].value, eig.data[n - 2], 1e-8 * scale);
  EXPECT_NEAR(r.pairs[2].value, eig.data[n - 1], 1e-8 * scale);
  for (const RitzPair& p : r.pairs) EXPECT_TRUE(p.converged) << p.residual << " after " << r.steps << " steps";
}

TEST(Eigen, TopKLargerThanNIsAUsageError) {
  EXPECT_THROW(check_eigen_request(parse_eigen_request("top:400"), 343), UsageError);
  EXPECT_NO_THROW(check_eigen_request(parse_eigen_request("top:343"), 343));
}

}  // namespace
}  // namespace dhess
