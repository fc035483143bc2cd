#pragma once
// What the dense run and `dhess plan` decide before any Hessian-vector product -- grid, block,
// solver, panel width, memory per rank -- and the one feasibility check both make.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "dhess/core/memory.hpp"
#include "dhess/linalg/eigensolver.hpp"
#include "dhess/run/options.hpp"
#include "dhess/run/setup.hpp"
#include "dhess/torch/hvp.hpp"

namespace dhess {

// The memory of the HVP panels: `panel` columns per product, each `per_column` bytes, and what a
// product holds whatever its width (measured on the model by HvpEngine, the largest over ranks).
struct PanelMemory {
  int64_t panel = 1;
  double per_column = 0, per_product = 0;
};

// Bytes per rank of a dense run.
struct MemoryPlan {
  double h = 0, z = 0, workspace = 0, panel = 0, baseline = 0, total = 0, available = 0;
  double blocks = 0;  // --blocks: the largest diagonal block copied out of H and its solver's workspace
  std::string available_source;  // where `available` came from (memory_budget)
  nlohmann::json to_json() const;
};

// The H share, eigenvectors and solver workspace of a resolved `solver` on a rows × cols grid (or
// the rank-revealing sketch of `sketch_columns` vectors before it, where larger), the HVP panel
// (each column at least 4 n-vectors), and the process as resident now; `budget` is what it is
// checked against. With `largest_block` > 0 (--blocks), that block's matrix and the workspace of its
// eigenvalues, held beside H before the solver runs (not beside the solver's own).
MemoryPlan plan_memory(int64_t n, int block, int rows, int cols, const EigenRequest& request, Solver solver,
                       int64_t sketch_columns, Dtype dtype, const PanelMemory& panel, const MemoryBudget& budget,
                       int64_t largest_block = 0);

// The memory one rank may use: --mem-per-rank, else memory_budget() (the node, the job's cgroup,
// SLURM's limits), the tightest rank's on every rank. Collective.
MemoryBudget memory_per_rank(const RunOptions& o, int ranks_on_node, MPI_Comm comm);

struct DenseSetup {
  int rows = 1, cols = 1;
  EigenRequest request;
  Solver solver = Solver::automatic;  // resolved: the backend that will run
  int64_t sketch_columns = 0;         // the rank-revealing sketch's bound before it (lowrank_sketch_columns)
  Loaded loaded;
  int64_t n = 0;
  int block = 64;
  std::unique_ptr<HvpEngine> engine;
  PanelMemory panel;
  MemoryPlan plan;
  std::string solver_note;  // why --solver auto did not take its first choice
  std::string limit;        // why the solver cannot index this size here (int32_refusal), or ""
};

// Loads the problem and decides everything for `ranks` ranks, `ranks_on_node` of them per node;
// every rank gets the same decisions (memory readings are agreed on the worst rank's numbers).
// Throws UsageError for a grid, block, request or solver that cannot run.
DenseSetup prepare_dense(const RunOptions& o, const Rank& r, int ranks, int ranks_on_node);

// Within the memory and the 32-bit limits.
bool fits(const DenseSetup& s);
// Why the plan does not fit, with the numbers and a rank count that would: memory first (its rank
// count is the larger), then the 32-bit limits.
std::string refusal(const RunOptions& o, const DenseSetup& s, int ranks);
// Smallest power-of-two multiple of `ranks` at which the plan fits (memory and 32-bit limits).
int64_t ranks_that_fit(const RunOptions& o, const DenseSetup& s, int ranks);

}  // namespace dhess
