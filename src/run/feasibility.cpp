#include "dhess/run/feasibility.hpp"

#include <algorithm>
#include <vector>

#include "dhess/core/collective.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/core/memory.hpp"
#include "dhess/dist/process_grid.hpp"

namespace dhess {
namespace {

int choose_block(int requested, int64_t n, int rows, int cols) {
  if (requested > 0) {
    if (requested > n)
      throw UsageError("--block " + std::to_string(requested) + " is larger than n = " + std::to_string(n));
    return requested;
  }
  // 64 keeps ScaLAPACK's level-3 kernels efficient; smaller only when each process row/column
  // would otherwise get no block.
  int b = 64;
  while (b > 1 && static_cast<int64_t>(b) * std::max(rows, cols) > n) b /= 2;
  return b;
}

// Memory readings differ between ranks: decide on the worst rank's numbers, the same everywhere
// (the budget is agreed already).
void agree_on_plan(MPI_Comm comm, MemoryPlan& m) {
  double most[2] = {m.baseline, m.total};
  MPI_Allreduce(MPI_IN_PLACE, most, 2, MPI_DOUBLE, MPI_MAX, comm);
  m.baseline = most[0];
  m.total = most[1];
}

// The most parameters in one --blocks block (0 without --blocks).
int64_t largest_block(const RunOptions& o, const DenseSetup& s) {
  if (o.blocks.kind == BlockSpec::Kind::none) return 0;
  int64_t most = 0;
  for (const auto& b : group_parameters(s.loaded.problem->layout(), o.blocks)) most = std::max(most, b.size);
  return most;
}

// The text of the rank that holds `value`'s minimum, on every rank.
std::string text_of_minimum(MPI_Comm comm, double value, const std::string& text) {
  struct {
    double value;
    int rank;
  } mine{value, 0}, least{};
  MPI_Comm_rank(comm, &mine.rank);
  MPI_Allreduce(&mine, &least, 1, MPI_DOUBLE_INT, MPI_MINLOC, comm);
  std::vector<char> buffer(text.begin(), text.end());
  int size = static_cast<int>(buffer.size());
  MPI_Bcast(&size, 1, MPI_INT, least.rank, comm);
  buffer.resize(static_cast<std::size_t>(size));
  MPI_Bcast(buffer.data(), size, MPI_CHAR, least.rank, comm);
  return {buffer.begin(), buffer.end()};
}

// The sketch auto tries first, narrowed until the run's plan fits (none where no width does): a run
// that fits without it is never refused for it. Every rank takes the same widths (the plan is agreed).
int64_t sketch_that_fits(const RunOptions& o, const Rank& r, const DenseSetup& s, Solver solver, MemoryPlan& m) {
  int64_t k = lowrank_sketch_columns(o.solver, solver, s.request, o.problem.dtype, s.n, s.block, s.rows, s.cols);
  const MemoryBudget budget{s.plan.available, s.plan.available_source};
  while (true) {
    m = plan_memory(s.n, s.block, s.rows, s.cols, s.request, solver, k, o.problem.dtype, s.panel, budget,
                    largest_block(o, s));
    agree_on_plan(r.comm, m);
    if (m.total <= m.available || k == 0 || o.solver != Solver::automatic) return k;
    k = k >= 128 ? k * 7 / 8 : 0;
  }
}

// ELPA 2-stage is the fastest for eigenvalues but needs 2.5-3.75 H shares of workspace, against
// pdsyevr's few vectors: where ELPA does not fit and ScaLAPACK does, --solver auto takes ScaLAPACK.
void prefer_solver_that_fits(const RunOptions& o, const Rank& r, DenseSetup& s) {
  if (o.solver != Solver::automatic || s.plan.total <= s.plan.available || s.solver != Solver::elpa) return;
  const Solver fallback = choose_solver_without_elpa(s.request, s.rows, s.cols, s.n);
  MemoryPlan m;
  const int64_t sketch = sketch_that_fits(o, r, s, fallback, m);
  if (m.total > m.available) return;
  s.sketch_columns = sketch;
  s.solver_note = std::string("--solver auto: ELPA would need ") + human_bytes(s.plan.total) + " per rank, " +
                  human_bytes(s.plan.available) + " is available; using " + solver_name(fallback) + " (" +
                  human_bytes(m.total) + " per rank)";
  s.solver = fallback;
  s.plan = m;
}

// The HVP panel width: --panel, else what a tenth of the rank's memory holds of the columns
// measured on the model, the smallest over ranks so that panels are equal. The measured column
// (the largest over ranks) goes into the plan either way.
std::unique_ptr<HvpEngine> fitted_engine(const RunOptions& o, const Rank& r, Problem& problem, double available,
                                         PanelMemory& memory) {
  HvpOptions options;
  options.panel = o.panel;
  options.mode = o.hvp_mode;
  options.compiled = o.compiled;
  std::unique_ptr<HvpEngine> engine;
  run_collectively(r.comm, [&] {
    engine = std::make_unique<HvpEngine>(problem, options);
    if (o.panel == 0)
      engine->fit_panel_to(static_cast<std::size_t>(0.1 * available));
    else
      engine->measure_column_bytes();
  });
  double measured[2] = {engine->column_bytes(), engine->product_bytes()};
  MPI_Allreduce(MPI_IN_PLACE, measured, 2, MPI_DOUBLE, MPI_MAX, r.comm);
  memory = {engine->panel_width(), measured[0], measured[1]};
  if (o.panel > 0) return engine;
  int64_t smallest = engine->panel_width();
  MPI_Allreduce(MPI_IN_PLACE, &smallest, 1, MPI_INT64_T, MPI_MIN, r.comm);
  memory.panel = smallest;
  engine->narrow_panel_to(smallest);
  return engine;
}

}  // namespace

nlohmann::json MemoryPlan::to_json() const {
  return {{"hessian_share", h},
          {"eigenvectors_share", z},
          {"solver_workspace", workspace},
          {"largest_block", blocks},
          {"panel", panel},
          {"process", baseline},
          {"total", total},
          {"available", available},
          {"available_source", available_source}};
}

MemoryPlan plan_memory(int64_t n, int block, int rows, int cols, const EigenRequest& request, Solver solver,
                       int64_t sketch_columns, Dtype dtype, const PanelMemory& panel, const MemoryBudget& budget,
                       int64_t largest_block) {
  const double elem = static_cast<double>(dtype_bytes(dtype));
  MemoryPlan m;
  auto local = [&](int64_t extent, int procs) {
    const int64_t blocks = (extent + block - 1) / block;
    return static_cast<double>((blocks + procs - 1) / procs) * block;
  };
  m.h = local(n, rows) * local(n, cols) * elem;
  // LAPACK's dsyevd leaves the eigenvectors in H's place; its dsyevr writes only the K asked for.
  const bool lapack = solver == Solver::lapack;
  m.z = !request.wants_vectors()                  ? 0
        : !lapack                                 ? m.h
        : request.kind == EigenRequest::Kind::all ? 0
                                                  : static_cast<double>(n) * request.count(n) * elem;
  m.workspace = static_cast<double>(
      solver_workspace_bytes(solver, request, n, block, rows, cols, dtype_bytes(dtype), sketch_columns));
  // The panel, its products and the backward temporaries, as measured on the model (HvpEngine).
  m.panel = panel.per_product +
            static_cast<double>(panel.panel) * std::max(panel.per_column, 4.0 * static_cast<double>(n) * elem);
  if (largest_block > 0) {
    const EigenRequest values{EigenRequest::Kind::values, 0};
    const Solver by = resolve_solver(Solver::automatic, values, block, rows, cols, largest_block, dtype);
    m.blocks = local(largest_block, rows) * local(largest_block, cols) * elem +
               static_cast<double>(
                   solver_workspace_bytes(by, values, largest_block, block, rows, cols, dtype_bytes(dtype)));
  }
  // The process itself (torch, the model, the data) as resident now.
  m.baseline = static_cast<double>(current_rss_bytes());
  m.total = m.h + std::max(m.z + m.workspace, m.blocks) + m.panel + m.baseline;
  m.available = budget.bytes;
  m.available_source = budget.source;
  return m;
}

MemoryBudget memory_per_rank(const RunOptions& o, int ranks_on_node, MPI_Comm comm) {
  if (o.mem_per_rank > 0) return {o.mem_per_rank, "--mem-per-rank"};
  MemoryBudget mine = memory_budget(ranks_on_node), least = mine;
  MPI_Allreduce(&mine.bytes, &least.bytes, 1, MPI_DOUBLE, MPI_MIN, comm);
  least.source = text_of_minimum(comm, mine.bytes, mine.source);
  return least;
}

DenseSetup prepare_dense(const RunOptions& o, const Rank& r, int ranks, int ranks_on_node) {
  DenseSetup s;
  std::tie(s.rows, s.cols) = o.grid ? *o.grid : square_grid(ranks);
  s.request = o.eigen;
  s.loaded = load(o, r);
  s.n = s.loaded.problem->layout().n();
  run_collectively(r.comm, [&] {
    s.loaded.problem->require_separable(1);
    check_eigen_request(s.request, s.n);
    s.block = choose_block(o.block, s.n, s.rows, s.cols);
    s.solver = resolve_solver(o.solver, s.request, s.block, s.rows, s.cols, s.n, o.problem.dtype);
  });
  const MemoryBudget budget = memory_per_rank(o, ranks_on_node, r.comm);
  s.engine = fitted_engine(o, r, *s.loaded.problem, budget.bytes, s.panel);
  s.plan.available = budget.bytes;
  s.plan.available_source = budget.source;
  s.sketch_columns = sketch_that_fits(o, r, s, s.solver, s.plan);
  prefer_solver_that_fits(o, r, s);
  s.limit = int32_refusal(s.solver, s.request, s.n, s.block, s.rows, s.cols);
  return s;
}

bool fits(const DenseSetup& s) { return s.plan.total <= s.plan.available && s.limit.empty(); }

int64_t ranks_that_fit(const RunOptions& o, const DenseSetup& s, int ranks) {
  int64_t p = ranks;
  while (p < (int64_t(1) << 20)) {
    p *= 2;
    const auto [rows, cols] = square_grid(static_cast<int>(p));
    // The solver --solver auto would take on that grid (LAPACK runs on one process only).
    Solver solver =
        choose_solver(o.solver == Solver::lapack ? Solver::automatic : o.solver, s.request, s.block, rows, cols, s.n);
    if (solver == Solver::elpa && o.problem.dtype == Dtype::float32)
      solver = choose_solver_without_elpa(s.request, rows, cols, s.n);
    const int64_t sketch =
        lowrank_sketch_columns(o.solver, solver, s.request, o.problem.dtype, s.n, s.block, rows, cols);
    const MemoryPlan m = plan_memory(s.n, s.block, rows, cols, s.request, solver, sketch, o.problem.dtype, s.panel,
                                     {s.plan.available, s.plan.available_source}, largest_block(o, s));
    if (m.total - m.baseline + s.plan.baseline <= s.plan.available &&
        int32_limit(solver, s.request, s.n, s.block, rows, cols).empty())
      break;
  }
  return p;
}

std::string refusal(const RunOptions& o, const DenseSetup& s, int ranks) {
  const MemoryPlan& m = s.plan;
  if (m.total <= m.available) return s.limit;
  if (m.baseline + m.panel >= m.available) {
    const Problem& p = *s.loaded.problem;
    // The graph of one micro-batch is part of the process: smaller ones shrink it, ranks do not.
    const bool split = p.num_micro_batches() == 1 && p.num_samples() > 1;
    return "n = " + std::to_string(s.n) + ": the process itself needs " + human_bytes(m.baseline + m.panel) +
           " per rank (torch, model, data, the graph of " + std::to_string(p.largest_micro_batch()) +
           " samples, one panel) but " + human_bytes(m.available) + " is available per rank (" + m.available_source +
           "): more ranks will not help; " +
           (split ? "pass --batch-size (micro-batches: one graph of fewer samples at a time), or " : "") +
           "give each rank more memory";
  }
  return "n = " + std::to_string(s.n) + " needs " + human_bytes(m.total) + " per rank (H share " + human_bytes(m.h) +
         ", eigenvectors " + human_bytes(m.z) + ", solver workspace " + human_bytes(m.workspace) +
         (m.blocks > 0 ? ", the largest --blocks block " + human_bytes(m.blocks) : "") + ", panel " +
         human_bytes(m.panel) + ", process " + human_bytes(m.baseline) + ") but " + human_bytes(m.available) +
         " is available per rank (" + m.available_source + "); use about " +
         std::to_string(ranks_that_fit(o, s, ranks)) + " ranks of this size" +
         (o.problem.dtype == Dtype::float32 ? "" : ", --dtype float32") +
         (s.request.wants_vectors() ? ", --eigen values (no eigenvectors)" : "") +
         ", or no dense H: dhess spectrum (matrix-free: extreme eigenpairs, density, trace; --nonzero for every "
         "nonzero eigenpair of a low-rank H) keeps a few vectors of n per rank";
}

}  // namespace dhess
