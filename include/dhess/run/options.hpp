#pragma once
// The options of a run, typed. app/ parses the command line into them once; nothing below app/
// reads a flag's text.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dhess/core/blocks.hpp"
#include "dhess/linalg/eigensolver.hpp"
#include "dhess/torch/device.hpp"
#include "dhess/torch/hvp.hpp"
#include "dhess/torch/problem.hpp"

namespace dhess {

struct RunOptions {
  ProblemSpec problem;
  DeviceChoice device = DeviceChoice::automatic;
  int threads = 0;  // per rank; 0 = automatic
  std::string out = "dhess-out";
  bool force = false;
  bool save_hessian = false;
  EigenRequest eigen;  // values by default
  Solver solver = Solver::automatic;
  std::optional<std::pair<int, int>> grid;  // rows × columns; unset = near-square
  int block = 0;                            // 0 = automatic
  int64_t panel = 0;                        // HVP columns per pass; 0 = automatic
  BatchMode hvp_mode = BatchMode::automatic;
  std::string compiled;    // --compiled: packages of `dhess compile`; empty = the eager product
  std::string checkpoint;  // directory; empty = none
  bool resume = false;
  double mem_per_rank = 0;  // bytes; 0 = read from the node
  bool quiet = false;
  std::string command_line;
  BlockSpec blocks;                      // --blocks: per-block curvature; none by default
  int64_t block_top = 3;                 // largest eigenvalues per block
  std::vector<double> prior_precisions;  // --prior-precision: log det(C + delta I) for each delta
};

enum class DiagonalMode { none, exact, hutchinson, automatic };
// Hutch++ (default: the better estimate for the same products), plain Hutchinson, or both (twice
// the products).
enum class TraceEstimator { hutchpp, hutchinson, both };

// Matrix-free spectrum (dhess spectrum).
struct SpectrumOptions {
  int64_t top = 10, bottom = 10;            // extreme eigenpairs by Lanczos
  int64_t max_steps = 300;                  // Lanczos steps at most
  int64_t lanczos_basis = 0;                // Lanczos vectors held at most; 0: what memory holds
  double tolerance = 1e-8;                  // ‖Hz − λz‖ ≤ tolerance · max|λ|
  int64_t slq_probes = 10, slq_steps = 80;  // density by stochastic Lanczos quadrature (0 probes = none)
  double sigma = 0.01;                      // density smoothing, relative to the spectrum's width
  int64_t trace_probes = 30;                // products of the trace estimate (0 = none)
  TraceEstimator trace_estimator = TraceEstimator::hutchpp;
  DiagonalMode diagonal = DiagonalMode::automatic;  // automatic: exact when n ≤ 20000
  int64_t diagonal_probes = 100;
  uint64_t seed = 0;
  bool nonzero = false;  // every nonzero eigenpair by a certified randomized range finder
};

}  // namespace dhess
