#pragma once
// The dhess commands as functions of their options: what main() runs after
// parsing the command line, and what the end-to-end tests call.
#include <mpi.h>

#include <string>

#include "dhess/problem.hpp"

namespace dhess {

struct RunOptions {
  ProblemSpec problem;
  std::string device = "auto";  // cpu | cuda | auto
  int threads = 0;              // per rank; 0 = automatic
  std::string out = "dhess-out";
  bool force = false;
  bool save_hessian = false;
  std::string eigen = "values";
  std::string solver = "auto";
  std::string grid;         // "RxC"; empty = near-square
  int block = 0;            // 0 = automatic
  int64_t panel = 0;        // HVP columns per pass; 0 = automatic
  std::string hvp_mode = "auto";  // auto | batched | one_column
  std::string checkpoint;   // directory; empty = none
  bool resume = false;
  double mem_per_rank = 0;  // bytes; 0 = read from the node
  bool quiet = false;
  std::string command_line;
};

// Matrix-free spectrum (dhess spectrum / --method lanczos).
struct SpectrumOptions {
  int64_t top = 10, bottom = 10;  // extreme eigenpairs by Lanczos
  int64_t max_steps = 300;        // Lanczos steps at most
  double tolerance = 1e-8;        // ‖Hz − λz‖ ≤ tolerance · max|λ|
  int64_t slq_probes = 10, slq_steps = 80;  // density by stochastic Lanczos quadrature (0 probes = none)
  double sigma = 0.01;            // density smoothing, relative to the spectrum's width
  int64_t trace_probes = 30;      // Hutchinson / Hutch++ products (0 = none)
  std::string diagonal = "auto";  // none | exact | hutchinson | auto (exact when n ≤ 20000)
  int64_t diagonal_probes = 100;
  uint64_t seed = 0;
};
void run_spectrum(const RunOptions& options, const SpectrumOptions& spectrum, MPI_Comm comm);

// Dense pipeline: Hessian columns → block-cyclic H → eigensolver → files.
void run_dense(const RunOptions& options, MPI_Comm comm);
// Pre-flight: memory per rank, HVP count and rate, time estimates, whether it
// fits, for `planned_ranks` ranks (0 = the ranks of `comm`).
void run_plan(const RunOptions& options, int planned_ranks, bool as_json, MPI_Comm comm);
// Prints the parameter layout and writes layout.json into --out.
void run_layout(const RunOptions& options, MPI_Comm comm);
// Writes a built-in model and its data as files Python can load.
void run_export(const RunOptions& options, const std::string& model_path, const std::string& data_path, MPI_Comm comm);

}  // namespace dhess
