// Assembled Hessians against independent oracles: torch.autograd.functional.hessian
// on the eager Python model (tests/oracle/make_cases.py) and closed forms.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "dhess/app/parse.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/dense/assembler.hpp"
#include "dhess/torch/hvp.hpp"
#include "dhess/torch/problem.hpp"
#include "problem_impl.hpp"
#include "test_support.hpp"

namespace dhess {
namespace {

using test::oracle;

ProblemSpec spec_of(const std::string& name, const std::string& loss, bool with_data = true) {
  ProblemSpec s;
  s.model = oracle(name + ".pt");
  if (with_data) s.data = oracle(name + "_data.pt");
  s.loss = parse_loss(loss);
  return s;
}

struct Shape {
  int rows, cols, block;
  int64_t panel;
  BatchMode mode = BatchMode::automatic;
};

// Builds H on the given grid and returns max|H - oracle| / max|oracle|, the same on all ranks.
template <typename T = double>
double assembled_error(const ProblemSpec& spec, const Shape& s, const std::string& oracle_file,
                       double* asymmetry = nullptr) {
  Problem problem(spec);
  problem.check();
  HvpOptions options;
  options.panel = s.panel;
  options.mode = s.mode;
  HvpEngine engine(problem, options);
  ProcessGrid grid(MPI_COMM_WORLD, s.rows, s.cols);
  const int64_t n = engine.n();
  BlockCyclicMatrix<T> h(grid, n, n, s.block, s.block);
  Progress quiet("columns", n, false);
  assemble<T>(engine, grid, h, quiet);
  SymmetryStats sym = symmetrize(grid, h, problem.layout().offsets());
  if (asymmetry) *asymmetry = sym.asymmetry;
  NpyArray expected = read_npy(oracle(oracle_file));
  EXPECT_EQ(expected.shape.at(0), n);
  return test::relative_difference(h, expected);
}

std::vector<Shape> grid_shapes(int64_t panel) {
  const int p = test::world_size();
  std::vector<Shape> shapes = {{1, p, 64, panel}, {p, 1, 7, panel}};
  if (p == 4) shapes.push_back({2, 2, 5, panel});
  return shapes;
}

TEST(Hessian, AssembledHessianMatchesTorchOracleOnConvNet) {
  for (const Shape& s : grid_shapes(0)) {
    double asym = 1;
    double err = assembled_error(spec_of("convnet", "cross_entropy"), s, "convnet_H.npy", &asym);
    EXPECT_LE(err, 1e-10) << "grid " << s.rows << "x" << s.cols << " block " << s.block;
    EXPECT_LE(asym, 1e-12);
  }
}

TEST(Hessian, PanelWidthsOneOddAndLargeGiveTheSameHessian) {
  // k = 1, a k that divides nothing (n = 343), and a k larger than n.
  for (int64_t k : {int64_t(1), int64_t(13), int64_t(1000)})
    EXPECT_LE(assembled_error(spec_of("convnet", "cross_entropy"), {1, test::world_size(), 16, k}, "convnet_H.npy"),
              1e-10)
        << "panel " << k;
}

TEST(Hessian, OneColumnModeMatchesOracle) {
  Shape s{1, test::world_size(), 32, 8, BatchMode::one_column};
  EXPECT_LE(assembled_error(spec_of("convnet", "cross_entropy"), s, "convnet_H.npy"), 1e-10);
}

TEST(Hessian, MicroBatchesGiveTheWholeDataSetHessian) {
  for (int64_t b : {int64_t(1), int64_t(4)}) {
    ProblemSpec spec = spec_of("convnet", "cross_entropy");
    spec.batch_size = b;
    EXPECT_LE(assembled_error(spec, {1, test::world_size(), 64, 32}, "convnet_H.npy"), 1e-10) << "batch " << b;
  }
}

TEST(Hessian, ParamsRegexGivesTheSubHessianOfTheLastLayer) {
  ProblemSpec spec = spec_of("convnet", "cross_entropy");
  spec.params_text = "^f2\\.";
  spec.params = parse_params(spec.params_text);
  EXPECT_LE(assembled_error(spec, {test::world_size(), 1, 16, 0}, "convnet_f2_H.npy"), 1e-10);
}

TEST(Hessian, UnusedParameterGivesExactZeroRowsAndAWarning) {
  ProblemSpec spec = spec_of("mlp_unused", "mse");
  Problem problem(spec);
  ProblemCheck check = problem.check();
  EXPECT_EQ(check.unused_parameters, (std::vector<std::string>{"spare.weight", "spare.bias"}));
  EXPECT_LE(assembled_error(spec, {1, test::world_size(), 8, 0}, "mlp_unused_H.npy"), 1e-10);
}

TEST(Hessian, TracedModelWithNllLossMatchesOracle) {
  EXPECT_LE(assembled_error(spec_of("traced_nll", "nll"), {test::world_size(), 1, 4, 5}, "traced_nll_H.npy"), 1e-10);
}

TEST(Hessian, TwoInputTensorsWithBceMatchOracle) {
  EXPECT_LE(
      assembled_error(spec_of("two_inputs", "bce_with_logits"), {1, test::world_size(), 3, 7}, "two_inputs_H.npy"),
      1e-10);
}

TEST(Hessian, LinearLeastSquaresMatchesClosedForm) {
  EXPECT_LE(assembled_error(spec_of("linear", "mse"), {1, test::world_size(), 2, 0}, "linear_closed_form.npy"), 1e-12);
}

TEST(Hessian, ScalarFunctionOfTwoParametersMatchesClosedForm) {
  // (2xy^2 + x^3 - 10) at x=2, y=-3: [[12,-12],[-12,8]]; --loss none, no data.
  Shape s{1, test::world_size(), 1, 0};  // with 4 ranks, two own no column at all
  EXPECT_LE(assembled_error(spec_of("scalar", "none", false), s, "scalar_closed_form.npy"), 1e-14);
}

TEST(Hessian, Float32AgreesWithOracleToSinglePrecision) {
  ProblemSpec spec = spec_of("convnet", "cross_entropy");
  spec.dtype = Dtype::float32;
  EXPECT_LE(assembled_error<float>(spec, {1, test::world_size(), 32, 0}, "convnet_H.npy"), 1e-5);
}

TEST(Hessian, PerturbedOracleIsDetected) {
  // The comparison must be able to fail: one entry off by 1e-8 relative is caught.
  Problem problem(spec_of("linear", "mse"));
  HvpEngine engine(problem, {});
  ProcessGrid grid(MPI_COMM_WORLD, 1, test::world_size());
  BlockCyclicMatrix<double> h(grid, engine.n(), engine.n(), 2, 2);
  Progress quiet("columns", engine.n(), false);
  assemble<double>(engine, grid, h, quiet);
  symmetrize(grid, h, problem.layout().offsets());  // the columns hold the lower triangle
  NpyArray expected = read_npy(oracle("linear_closed_form.npy"));
  ASSERT_LE(test::relative_difference(h, expected), 1e-12);
  double scale = 0;
  for (double v : expected.data) scale = std::max(scale, std::abs(v));
  expected.data[3 * engine.n() + 5] += 1e-8 * scale;
  EXPECT_GT(test::relative_difference(h, expected), 1e-10);
}

TEST(Hessian, ApplyMatchesOracleTimesVector) {
  ProblemSpec spec = spec_of("convnet", "cross_entropy");
  Problem problem(spec);
  HvpEngine engine(problem, {});
  NpyArray h = read_npy(oracle("convnet_H.npy"));
  const int64_t n = engine.n(), k = 3;
  std::vector<double> v(n * k), out(n * k);
  for (int64_t i = 0; i < n * k; ++i) v[i] = std::sin(0.37 * static_cast<double>(i));
  engine.apply(v.data(), k, out.data());
  double err = 0, scale = 0;
  for (int64_t c = 0; c < k; ++c)
    for (int64_t i = 0; i < n; ++i) {
      double expected = 0;
      for (int64_t j = 0; j < n; ++j) expected += h.data[i * n + j] * v[c * n + j];
      err = std::max(err, std::abs(out[c * n + i] - expected));
      scale = std::max(scale, std::abs(expected));
    }
  EXPECT_LE(err / scale, 1e-10);
}

// TorchScript files keep whole-tensor ties but not partial views (torch.jit.save writes each
// view's elements apart), so these are built in memory.
torch::jit::Module module_with(const std::vector<std::pair<std::string, torch::Tensor>>& params) {
  torch::jit::Module m("tied");
  for (const auto& [name, t] : params) m.register_parameter(name, t, false);
  return m;
}

TEST(Parameters, TiedTensorIsCountedOnceUnderItsFirstName) {
  auto emb = torch::randn({5, 3}), other = torch::randn({4});
  auto found = distinct_parameters(module_with({{"emb", emb}, {"other", other}, {"dec", emb}}));
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].names, (std::vector<std::string>{"emb", "dec"}));
  EXPECT_EQ(found[1].names, (std::vector<std::string>{"other"}));
}

TEST(Parameters, ViewOfPartOfAnotherParameterIsRefused) {
  auto a = torch::randn({4, 3});
  try {
    distinct_parameters(module_with({{"a", a}, {"b", a.narrow(0, 1, 2)}}));
    FAIL() << "a partial view was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("'b' [2,3] shares 6 of its elements with parameter 'a' [4,3]"),
              std::string::npos)
        << e.what();
  }
  // Interleaved columns of one storage share no element: two parameters.
  EXPECT_EQ(distinct_parameters(module_with({{"even", a.select(1, 0)}, {"odd", a.select(1, 1)}})).size(), 2u);
}

}  // namespace
}  // namespace dhess
