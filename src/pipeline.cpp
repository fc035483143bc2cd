#include "dhess/pipeline.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "dhess/assembler.hpp"
#include "dhess/checkpoint.hpp"
#include "dhess/collective.hpp"
#include "dhess/eigensolver.hpp"
#include "dhess/errors.hpp"
#include "dhess/hvp.hpp"
#include "dhess/interrupt.hpp"
#include "dhess/io/hdf5_matrix.hpp"
#include "dhess/io/npy.hpp"
#include "dhess/io/output_dir.hpp"
#include "dhess/memory.hpp"
#include "dhess/process_grid.hpp"
#include "dhess/runtime.hpp"
#include "dhess/summary.hpp"
#include "pipeline_support.hpp"

namespace dhess {
using namespace detail;
namespace {

int choose_block(int requested, int64_t n, int rows, int cols) {
  if (requested < 0) throw UsageError("--block must be positive");
  if (requested > 0) {
    if (requested > n)
      throw UsageError("--block " + std::to_string(requested) + " is larger than n = " + std::to_string(n));
    return requested;
  }
  // 64 keeps ScaLAPACK's level-3 kernels efficient; smaller only when each
  // process row/column would otherwise get no block.
  int b = 64;
  while (b > 1 && static_cast<int64_t>(b) * std::max(rows, cols) > n) b /= 2;
  return b;
}

struct MemoryPlan {
  double h = 0, z = 0, workspace = 0, panel = 0, baseline = 0, total = 0, available = 0;
  json to_json() const {
    return {{"hessian_share", h}, {"eigenvectors_share", z}, {"solver_workspace", workspace}, {"panel", panel},
            {"process", baseline}, {"total", total}, {"available", available}};
  }
};

MemoryPlan plan_memory(const RunOptions& o, int64_t n, int block, int rows, int cols, const EigenRequest& request,
                       Solver solver, std::size_t elem, int64_t panel, int local_size) {
  MemoryPlan m;
  auto local = [&](int procs) {
    int64_t blocks = (n + block - 1) / block;
    return static_cast<double>((blocks + procs - 1) / procs) * block;
  };
  m.h = local(rows) * local(cols) * static_cast<double>(elem);
  // LAPACK's dsyevd leaves the eigenvectors in H's place; its dsyevr writes only the K asked for.
  const bool lapack = choose_solver(solver, request, block, rows, cols, n) == Solver::lapack;
  m.z = !request.wants_vectors() ? 0
        : !lapack                ? m.h
        : request.kind == EigenRequest::Kind::all ? 0
                                                  : static_cast<double>(n) * request.count(n) * static_cast<double>(elem);
  m.workspace = static_cast<double>(solver_workspace_bytes(solver, request, n, block, rows, cols, elem));
  // The panel, its products and the backward temporaries (see HvpEngine).
  m.panel = 4.0 * static_cast<double>(n) * static_cast<double>(panel) * static_cast<double>(elem);
  // The process itself (torch, the model, the data) as resident now.
  m.baseline = static_cast<double>(current_rss_bytes());
  m.total = m.h + m.z + m.workspace + m.panel + m.baseline;
  m.available = o.mem_per_rank > 0 ? o.mem_per_rank
                                   : static_cast<double>(available_memory_bytes()) / std::max(1, local_size);
  return m;
}

// Columns `indices` of a block-cyclic matrix, on every rank (small counts only).
template <typename T>
std::vector<std::vector<double>> gather_columns(const Rank& r, const BlockCyclicMatrix<T>& z,
                                                const std::vector<int64_t>& indices) {
  const int64_t n = z.rows();
  std::vector<double> local(indices.size() * n, 0.0), all(indices.size() * n, 0.0);
  for (std::size_t s = 0; s < indices.size(); ++s) {
    if (z.col_axis().owner(indices[s]) != z.my_col()) continue;
    int64_t lj = z.col_axis().local(indices[s]);
    for (int64_t li = 0; li < z.local_rows(); ++li) local[s * n + z.global_row(li)] = z.at_local(li, lj);
  }
  check_mpi(MPI_Allreduce(local.data(), all.data(), static_cast<int>(all.size()), MPI_DOUBLE, MPI_SUM, r.comm),
            "MPI_Allreduce");
  std::vector<std::vector<double>> out;
  for (std::size_t s = 0; s < indices.size(); ++s) out.emplace_back(all.begin() + s * n, all.begin() + (s + 1) * n);
  return out;
}

// Residuals ‖Hz − λz‖/‖H‖ of a few eigenpairs with Hz from fresh HVPs (not from
// the assembled matrix), and the orthogonality of those eigenvectors.
template <typename T>
json self_check(const Rank& r, HvpEngine& engine, const Spectrum<T>& s, double norm) {
  const int64_t m = static_cast<int64_t>(s.values.size());
  std::vector<int64_t> idx;
  for (int64_t i : {m - 1, int64_t(0), m - 2, m / 2})
    if (i >= 0 && i < m && std::find(idx.begin(), idx.end(), i) == idx.end()) idx.push_back(i);
  std::vector<int64_t> columns;
  for (auto i : idx) columns.push_back(s.first_column + i);
  auto zs = gather_columns(r, *s.vectors, columns);
  const int64_t n = engine.n();
  std::vector<double> residual(idx.size(), 0.0), all(idx.size(), 0.0);
  run_collectively(r.comm, [&] {
    for (std::size_t k = 0; k < idx.size(); ++k) {
      if (static_cast<int>(k % r.size) != r.rank) continue;
      std::vector<double> hz(n);
      engine.apply(zs[k].data(), 1, hz.data());
      double sq = 0;
      for (int64_t i = 0; i < n; ++i) sq += std::pow(hz[i] - s.values[idx[k]] * zs[k][i], 2);
      residual[k] = std::sqrt(sq) / std::max(norm, 1e-300);
    }
  });
  check_mpi(MPI_Allreduce(residual.data(), all.data(), static_cast<int>(all.size()), MPI_DOUBLE, MPI_MAX, r.comm),
            "MPI_Allreduce");
  double ortho = 0;
  for (std::size_t a = 0; a < zs.size(); ++a)
    for (std::size_t b = 0; b <= a; ++b) {
      double dot = 0;
      for (int64_t i = 0; i < n; ++i) dot += zs[a][i] * zs[b][i];
      ortho = std::max(ortho, std::abs(dot - (a == b ? 1.0 : 0.0)));
    }
  json pairs = json::array();
  for (std::size_t k = 0; k < idx.size(); ++k)
    pairs.push_back({{"index", idx[k]}, {"eigenvalue", s.values[idx[k]]}, {"residual", all[k]}});
  return {{"pairs", pairs},
          {"max_residual", *std::max_element(all.begin(), all.end())},
          {"orthogonality", ortho},
          {"residual_definition", "||H z - lambda z||_2 / max|lambda|, H z from a fresh Hessian-vector product"}};
}

// share[i][p] = part of eigenvector i's squared norm inside parameter tensor p.
template <typename T>
std::vector<double> parameter_shares(const Rank& r, const BlockCyclicMatrix<T>& z, int64_t first, int64_t m,
                                     const ParameterLayout& layout) {
  const std::size_t np = layout.parameters().size();
  std::vector<std::size_t> owner(z.local_rows());
  for (int64_t li = 0; li < z.local_rows(); ++li) owner[li] = layout.owner_of(z.global_row(li));
  std::vector<double> local(m * np, 0.0), total(m * np, 0.0);
  for (int64_t lj = 0; lj < z.local_cols(); ++lj) {
    int64_t j = z.global_col(lj) - first;
    if (j < 0 || j >= m) continue;
    for (int64_t li = 0; li < z.local_rows(); ++li) {
      double v = z.at_local(li, lj);
      local[j * np + owner[li]] += v * v;
    }
  }
  check_mpi(MPI_Allreduce(local.data(), total.data(), static_cast<int>(total.size()), MPI_DOUBLE, MPI_SUM, r.comm),
            "MPI_Allreduce");
  return total;
}

json shares_json(const std::vector<double>& shares, const std::vector<double>& values, const ParameterLayout& layout,
                 int64_t few) {
  const std::size_t np = layout.parameters().size();
  const int64_t m = static_cast<int64_t>(values.size());
  auto entry = [&](int64_t i) {
    json by_param = json::object();
    for (std::size_t p = 0; p < np; ++p) by_param[layout.parameters()[p].name] = shares[i * np + p];
    return json{{"index", i}, {"eigenvalue", values[i]}, {"share", by_param}};
  };
  json top = json::array(), bottom = json::array();
  for (int64_t i = m - 1; i >= std::max<int64_t>(0, m - few); --i) top.push_back(entry(i));
  for (int64_t i = 0; i < std::min(few, m); ++i) bottom.push_back(entry(i));
  return {{"top", top}, {"bottom", bottom}};
}

template <typename T>
void dense(const RunOptions& o, const Rank& r, Loaded& l, HvpEngine& engine, const ProcessGrid& grid, int block,
           const EigenRequest& request, Solver solver, OutputDir& out, const Checkpoint* checkpoint, json& summary) {
  const int64_t n = engine.n();
  const ParameterLayout& layout = l.problem->layout();
  std::vector<std::string> files;
  json timings, peaks;
  auto phase_peak = [&](const char* name) {
    double mine = static_cast<double>(peak_rss_bytes());
    auto all = gather_doubles(r, mine);
    peaks[name] = all;
    reset_peak_rss();
  };
  const double t_start = MPI_Wtime();
  reset_peak_rss();

  BlockCyclicMatrix<T> h(grid, n, n, block, block);
  Progress progress("columns", n, r.root() && !o.quiet);
  AssemblyHooks<T> hooks;
  if (checkpoint) {
    hooks.lookup = [&](int64_t j0, int64_t j1, T* panel) { return checkpoint->load<T>(j0, j1, n, panel); };
    hooks.sink = [&](int64_t j0, int64_t j1, const T* panel) { checkpoint->save<T>(j0, j1, n, panel); };
  }
  hooks.after_round = [&](int64_t done) {
    if (!stop_requested(r.comm)) return;
    Interrupted stop("stopped by a signal after " + std::to_string(done) + " of " + std::to_string(n) +
                     " columns; " +
                     (checkpoint ? "finished panels are in checkpoint '" + checkpoint->dir() +
                                       "': rerun the same command with --resume"
                                 : std::string("no --checkpoint was given, so nothing was kept")));
    stop.mark_agreed();  // every rank saw the same allreduced flag at the same round
    throw stop;
  };
  AssemblyStats stats = assemble<T>(engine, grid, h, progress, hooks);
  phase_peak("hvp_and_assembly");
  const SymmetryStats symmetry = symmetrize(grid, h);
  const double asymmetry = symmetry.asymmetry;
  const double tr = trace(grid, h);
  double io = 0;
  if (o.save_hessian) {
    double t = MPI_Wtime();
    write_hdf5_matrix(out.staged("hessian.h5"), "hessian", h, 0, n, r.comm);
    files.push_back("hessian.h5");
    io += MPI_Wtime() - t;
  }
  phase_peak("symmetrize_and_save");

  double t_solve = MPI_Wtime();
  Spectrum<T> spectrum = solve(grid, h, request, solver);
  h.release();
  const double solve_seconds = MPI_Wtime() - t_solve;
  phase_peak("eigensolver");

  json eigen;
  const double zero_rel = std::is_same_v<T, double> ? 1e-8 : 1e-4;
  if (!spectrum.values.empty()) {
    const auto& v = spectrum.values;
    eigen = to_json(eigen_stats(v, zero_rel));
    eigen["count"] = v.size();
    eigen["request"] = request.text();
    json top = json::array(), bottom = json::array();
    for (int64_t i = static_cast<int64_t>(v.size()) - 1; i >= std::max<int64_t>(0, v.size() - 10); --i) top.push_back(v[i]);
    for (std::size_t i = 0; i < std::min<std::size_t>(10, v.size()); ++i) bottom.push_back(v[i]);
    eigen["top"] = top;
    eigen["bottom"] = bottom;
    eigen["zero_tolerance_definition"] = std::string("|lambda| <= ") + (zero_rel == 1e-8 ? "1e-8" : "1e-4") +
                                         " * max|lambda| counts as near zero";
    summary["solver"] = spectrum.routine;
  }

  json check = json::object();
  double t_io = MPI_Wtime();
  if (spectrum.vectors) {
    // ‖H‖₂ is max|λ| when the whole spectrum is known; otherwise ‖H‖_F bounds it from above.
    double norm = request.kind == EigenRequest::Kind::all
                      ? std::max(std::abs(spectrum.values.front()), std::abs(spectrum.values.back()))
                      : symmetry.frobenius;
    check = self_check(r, engine, spectrum, norm);
    const double limit = std::is_same_v<T, double> ? 1e-8 : 1e-3;
    if (check["max_residual"].get<double>() > limit || check["orthogonality"].get<double>() > limit)
      warn(r, "eigen self-check above " + std::to_string(limit) + ": residual " +
                  std::to_string(check["max_residual"].get<double>()) + ", orthogonality " +
                  std::to_string(check["orthogonality"].get<double>()));
    const int64_t m = static_cast<int64_t>(spectrum.values.size());
    write_hdf5_matrix(out.staged("eigenvectors.h5"), "eigenvectors", *spectrum.vectors, spectrum.first_column, m,
                      r.comm);
    files.push_back("eigenvectors.h5");
    auto shares = parameter_shares(r, *spectrum.vectors, spectrum.first_column, m, layout);
    eigen["parameter_share"] = shares_json(shares, spectrum.values, layout, 5);
    run_collectively(r.comm, [&] {
      if (!r.root()) return;
      write_npy(out.staged("eigenvector_shares.npy"), shares.data(),
                {m, static_cast<int64_t>(layout.parameters().size())});
    });
    files.push_back("eigenvector_shares.npy");
  }
  if (std::is_same_v<T, float>) {
    check["float32_note"] =
        "float32 eigenvalues carry absolute errors near 1e-6 * max|lambda|; values below that are not resolved";
    if (asymmetry > 1e-4) warn(r, "float32 asymmetry " + std::to_string(asymmetry) + " is large: prefer --dtype float64");
  }
  check["asymmetry"] = asymmetry;
  if (asymmetry > (std::is_same_v<T, double> ? 1e-8 : 1e-3))
    warn(r, "Hessian asymmetry ||H-H^T||/||H|| = " + std::to_string(asymmetry) +
                " before symmetrization (non-smooth or non-deterministic model?)");

  run_collectively(r.comm, [&] {
    if (!r.root()) return;
    if (!spectrum.values.empty()) {
      write_npy(out.staged("eigenvalues.npy"), spectrum.values.data(), {static_cast<int64_t>(spectrum.values.size())});
    }
    write_json(out.staged("layout.json"), layout.to_json());
  });
  if (!spectrum.values.empty()) {
    files.push_back("eigenvalues.npy");
    std::string problem;
    if (r.root())
      problem = draw_spectrum({"--out", out.staged("spectrum.png"), "--eigenvalues", out.staged("eigenvalues.npy"),
                               "--title", "Hessian spectrum (exact, " + request.text() + "), n = " +
                                              std::to_string(n)});
    int drawn = problem.empty() ? 1 : 0;
    check_mpi(MPI_Bcast(&drawn, 1, MPI_INT, 0, r.comm), "MPI_Bcast");
    if (drawn) files.push_back("spectrum.png");
    else warn(r, "spectrum.png not drawn: " + problem);
  }
  files.push_back("layout.json");
  io += MPI_Wtime() - t_io;
  phase_peak("output");

  double total_seconds = MPI_Wtime() - t_start;
  auto hvp = gather_doubles(r, stats.hvp_seconds);
  auto redist = gather_doubles(r, stats.redistribute_seconds);
  timings["hvp"] = *std::max_element(hvp.begin(), hvp.end());
  timings["redistribution"] = *std::max_element(redist.begin(), redist.end());
  timings["eigensolver"] = solve_seconds;
  timings["io"] = io;
  timings["total"] = total_seconds;
  timings["hvp_per_rank"] = hvp;

  double peak_max = 0;
  std::vector<double> per_rank(r.size, 0.0);
  for (const auto& phase : peaks)
    for (int i = 0; i < r.size; ++i) per_rank[i] = std::max(per_rank[i], phase[i].template get<double>());
  for (double v : per_rank) peak_max = std::max(peak_max, v);

  summary["timings_seconds"] = timings;
  summary["asymmetry"] = asymmetry;
  summary["trace"] = tr;
  if (!eigen.is_null()) summary["eigenvalues"] = eigen;
  summary["self_check"] = check;
  summary["hvp"]["mode"] = engine.mode_description();
  const json torch_notes = report_torch_warnings(r);
  summary["hvp"]["unbatched_ops"] = torch_notes["unbatched_ops"];
  summary["torch_warnings"] = torch_notes["other"];
  summary["hvp"]["columns_restored_from_checkpoint"] = gather_doubles(r, static_cast<double>(stats.columns_restored));
  summary["hvp"]["panel_width"] = stats.panel_width;
  summary["hvp"]["columns_per_second"] = timings["hvp"].get<double>() > 0 ? n / timings["hvp"].get<double>() : 0.0;
  summary["memory"]["peak_rss_per_rank"] = per_rank;
  summary["memory"]["peak_rss_per_phase"] = peaks;
  summary["memory"]["peak_rss_max_human"] = human_bytes(peak_max);
  files.push_back("summary.json");
  summary["files"] = files;
  run_collectively(r.comm, [&] {
    if (r.root()) write_json(out.staged("summary.json"), summary);
  });
  out.commit(files);
  say(r, o, human_summary(summary));
}

}  // namespace

namespace {

// What the dense pipeline and `dhess plan` decide before any heavy work.
struct Setup {
  int rows = 1, cols = 1;
  EigenRequest request;
  Solver solver = Solver::automatic;
  Loaded loaded;
  int64_t n = 0;
  int block = 64;
  std::unique_ptr<HvpEngine> engine;
  MemoryPlan plan;
  NodePlacement place;
  std::string solver_note;  // why --solver auto did not take its first choice
};

// Memory readings differ between ranks: decide on the worst rank's numbers, the same everywhere.
void agree_on_plan(const Rank& r, MemoryPlan& m) {
  double most[2] = {m.baseline, m.total}, least = m.available;
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, most, 2, MPI_DOUBLE, MPI_MAX, r.comm), "MPI_Allreduce");
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &least, 1, MPI_DOUBLE, MPI_MIN, r.comm), "MPI_Allreduce");
  m.baseline = most[0];
  m.total = most[1];
  m.available = least;
}

// Smallest power-of-two multiple of the current rank count at which the plan fits.
int64_t ranks_that_fit(const RunOptions& o, const Setup& s, int ranks, double available) {
  int64_t p = ranks;
  while (p < (int64_t(1) << 20)) {
    p *= 2;
    auto g = square_grid(static_cast<int>(p));
    MemoryPlan m = plan_memory(o, s.n, s.block, g.first, g.second, s.request, s.solver, dtype_bytes(o.problem.dtype),
                               s.engine->panel_width(), 1);
    if (m.total - m.baseline + s.plan.baseline <= available) break;
  }
  return p;
}

std::string memory_refusal(const Setup& s, int64_t ranks) {
  const MemoryPlan& m = s.plan;
  if (m.baseline + m.panel >= m.available)
    return "n = " + std::to_string(s.n) + ": the process itself needs " + human_bytes(m.baseline + m.panel) +
           " per rank (torch, model, data, one panel) but " +
           human_bytes(m.available) + " is available per rank: more ranks will not help; give each rank more memory";
  return "n = " + std::to_string(s.n) + " needs " + human_bytes(m.total) + " per rank (H share " + human_bytes(m.h) +
         ", eigenvectors " + human_bytes(m.z) + ", solver workspace " + human_bytes(m.workspace) + ", panel " +
         human_bytes(m.panel) + ", process " + human_bytes(m.baseline) + ") but " + human_bytes(m.available) +
         " is available per rank; use about " + std::to_string(ranks) +
         " ranks of this size, --dtype float32, or --eigen values (no eigenvectors)";
}

// ELPA 2-stage is the fastest for eigenvalues but needs 2.5-3.75 H shares of workspace, against
// pdsyevr's few vectors: where ELPA does not fit and ScaLAPACK does, --solver auto takes ScaLAPACK.
void prefer_solver_that_fits(const RunOptions& o, const Rank& r, Setup& s, int per_node) {
  if (s.solver != Solver::automatic || s.plan.total <= s.plan.available ||
      choose_solver(s.solver, s.request, s.block, s.rows, s.cols, s.n) != Solver::elpa)
    return;
  const Solver fallback = choose_solver_without_elpa(s.request, s.rows, s.cols, s.n);
  MemoryPlan m = plan_memory(o, s.n, s.block, s.rows, s.cols, s.request, fallback, dtype_bytes(o.problem.dtype),
                             s.engine->panel_width(), per_node);
  agree_on_plan(r, m);
  if (m.total > m.available) return;
  s.solver_note = std::string("--solver auto: ELPA would need ") + human_bytes(s.plan.total) + " per rank, " +
                  human_bytes(s.plan.available) + " is available; using " + solver_name(fallback) + " (" +
                  human_bytes(m.total) + " per rank)";
  s.solver = fallback;
  s.plan = m;
}

Setup prepare(const RunOptions& o, const Rank& r, int planned_ranks) {
  Setup s;
  run_collectively(r.comm, [&] {
    std::tie(s.rows, s.cols) = o.grid.empty() ? square_grid(planned_ranks) : parse_grid(o.grid, planned_ranks);
    s.request = parse_eigen_request(o.eigen);
    s.solver = parse_solver(o.solver);
    parse_hvp_mode(o.hvp_mode);
    if (o.resume && o.checkpoint.empty()) throw UsageError("--resume needs --checkpoint DIR");
  });
  s.loaded = load(o, r);
  s.n = s.loaded.problem->layout().n();
  run_collectively(r.comm, [&] {
    s.loaded.problem->require_separable(1);
    check_eigen_request(s.request, s.n);
    s.block = choose_block(o.block, s.n, s.rows, s.cols);
    if (s.request.kind != EigenRequest::Kind::none) check_solver(s.solver, s.request, s.block, s.rows, s.cols, s.n);
    HvpOptions options;
    options.panel = o.panel;
    options.mode = parse_hvp_mode(o.hvp_mode);
    s.engine = std::make_unique<HvpEngine>(*s.loaded.problem, options);
  });
  s.place = node_placement(r.comm, process_env());
  if (o.panel == 0) {
    // A tenth of this rank's memory for HVP panels; the smallest choice over ranks keeps panels equal.
    const double available = o.mem_per_rank > 0 ? o.mem_per_rank
                                                : static_cast<double>(available_memory_bytes()) / s.place.local_size;
    run_collectively(r.comm, [&] { s.engine->fit_panel_to(static_cast<std::size_t>(0.1 * available)); });
    int64_t mine = s.engine->panel_width(), smallest = mine;
    check_mpi(MPI_Allreduce(&mine, &smallest, 1, MPI_INT64_T, MPI_MIN, r.comm), "MPI_Allreduce");
    run_collectively(r.comm, [&] {
      if (smallest == mine) return;
      HvpOptions options;
      options.panel = smallest;
      options.mode = parse_hvp_mode(o.hvp_mode);
      s.engine = std::make_unique<HvpEngine>(*s.loaded.problem, options);
    });
  }
  s.plan = plan_memory(o, s.n, s.block, s.rows, s.cols, s.request, s.solver, dtype_bytes(o.problem.dtype),
                       s.engine->panel_width(), s.place.local_size);
  agree_on_plan(r, s.plan);
  prefer_solver_that_fits(o, r, s, s.place.local_size);
  return s;
}

struct SolverTiming {
  double seconds = 0;
  std::string basis;  // how the estimate was made, for the plan's reader
  bool upper_bound = false;
};

// Entry (i, j) of a seeded random symmetric matrix, computed where it lives: uniform in [-1, 1].
double random_symmetric(int64_t i, int64_t j) {
  uint64_t x = static_cast<uint64_t>(std::min(i, j)) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(std::max(i, j));
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return static_cast<double>(x >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

template <typename T>
double time_one_solve(const Rank& r, const ProcessGrid& grid, int64_t m, int block,
                      EigenRequest request, Solver solver) {
  BlockCyclicMatrix<T> a(grid, m, m, block, block);
  for (int64_t lj = 0; lj < a.local_cols(); ++lj)
    for (int64_t li = 0; li < a.local_rows(); ++li)
      a.at_local(li, lj) = static_cast<T>(random_symmetric(a.global_row(li), a.global_col(lj)));
  request.k = std::min<int64_t>(request.k, m);
  const double t0 = MPI_Wtime();
  solve(grid, a, request, solver);
  double t = MPI_Wtime() - t0;
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, r.comm), "MPI_Allreduce");
  return t;
}

// The eigensolver's time at n, from timing it on one process on random symmetric matrices of
// doubling size until a solve takes a second and the matrix is twice the last-level cache (below
// that, the memory-bound half of the tridiagonal reduction runs from cache and looks fast), or
// until the next size would take the timing past ten seconds. The last two sizes are fitted to
// t = a·n³ + b·n²: the n³ term is the reduction to tridiagonal or band form, the n² term what
// grows slower (band reduction, tridiagonal solve) and dominates small sizes, so a pure n³
// scaling of one small timing overestimates. Divided by the ranks at an assumed 70% parallel
// efficiency. A random matrix has no deflation: a Hessian with many near-zero eigenvalues can
// solve faster (bench/RESULTS.md, section d, compares with a real run).
SolverTiming time_solver(const RunOptions& o, const Rank& r, const Setup& s, Solver solver, int ranks) {
  SolverTiming timing;
  run_collectively(r.comm, [&] {
    ProcessGrid grid(MPI_COMM_SELF, 1, 1);
    const double element = static_cast<double>(dtype_bytes(o.problem.dtype));
    // Sizes whose matrix and workspace (about 5 copies) take at most a quarter of this rank's memory.
    double budget = 0.25 * static_cast<double>(available_memory_bytes()) / std::max(1, s.place.local_size);
    if (o.mem_per_rank > 0) budget = std::min(budget, 0.25 * o.mem_per_rank);
    const int64_t largest = std::max<int64_t>(256, static_cast<int64_t>(std::sqrt(budget / (5.0 * element))));
    const double cache = static_cast<double>(last_level_cache_bytes());
    std::vector<std::pair<double, double>> points;
    double spent = 0;
    for (int64_t m = 1024;; m *= 2) {
      const int64_t size = std::min({m, s.n, largest});
      const double t = o.problem.dtype == Dtype::float64
                           ? time_one_solve<double>(r, grid, size, s.block, s.request, solver)
                           : time_one_solve<float>(r, grid, size, s.block, s.request, solver);
      points.emplace_back(static_cast<double>(size), t);
      spent += t;
      // Ten seconds at most: the next size would take about eight times the last.
      const bool enough = points.size() >= 2 && ((t >= 1.0 && element * size * size >= 2 * cache) || spent + 8 * t > 10);
      if (size < m || enough) break;
    }
    const double n = static_cast<double>(s.n);
    const auto [n2, t2] = points.back();
    double a = t2 / (n2 * n2 * n2), b = 0;
    if (points.size() >= 2) {
      const auto [n1, t1] = points[points.size() - 2];
      const double fa = (t2 - t1 * (n2 / n1) * (n2 / n1)) / (n2 * n2 * (n2 - n1));
      const double fb = (t1 - fa * n1 * n1 * n1) / (n1 * n1);
      if (fa > 0 && fb > 0) a = fa, b = fb;
    }
    const double parallel = ranks == 1 ? 1.0 : 0.7 * ranks;
    timing.seconds = (a * n * n * n + b * n * n) / parallel;
    timing.basis = "random matrices of n = ";
    for (std::size_t i = 0; i < points.size(); ++i)
      timing.basis += (i ? ", " : "") + std::to_string(static_cast<int64_t>(points[i].first));
    timing.basis += " timed on one process";
    if (points.back().first != n) timing.basis += ", fitted to a n^3 + b n^2";
    if (parallel > 1) timing.basis += ", 70% parallel efficiency assumed";
    // Divide and conquer (ELPA, pdsyevd) deflates equal and zero eigenvalues, which random matrices
    // do not have and many Hessians do: the built-in convnet's, 89% exactly zero, solved in about 0.6x
    // the estimate (bench/RESULTS.md, section d). MRRR (pdsyevr, dsyevr) and the values-only
    // root finder of dsyevd cost the same for any spectrum.
    if (solver == Solver::elpa ||
        (s.request.kind == EigenRequest::Kind::all && (solver == Solver::pdsyevd || solver == Solver::lapack))) {
      timing.upper_bound = true;
      timing.basis += "; an upper bound: spectra with many equal or zero eigenvalues deflate and solve faster";
    }
  });
  return timing;
}

json checkpoint_identity(const RunOptions& o, const Setup& s) {
  const Problem& p = *s.loaded.problem;
  json params = json::array();
  for (const auto& info : p.layout().parameters()) params.push_back({info.name, info.shape, info.aliases});
  const bool builtin = o.problem.model.rfind("builtin:", 0) == 0;
  return {{"model", builtin ? o.problem.model : file_hash(o.problem.model)},
          {"data", o.problem.data.empty() ? std::string() : file_hash(o.problem.data)},
          {"loss", p.loss_name()},
          {"dtype", dtype_name(o.problem.dtype)},
          {"n", s.n},
          {"parameters", params},
          {"train_mode", o.problem.train_mode},
          {"panel_width", s.engine->panel_width()}};
}

}  // namespace

void run_dense(const RunOptions& o, MPI_Comm comm) {
  Rank r(comm);
  const double t0 = MPI_Wtime();
  Setup s = prepare(o, r, r.size);
  const Problem& problem = *s.loaded.problem;
  const Dtype dtype = o.problem.dtype;
  if (!s.solver_note.empty()) say(r, o, "dhess: " + s.solver_note + "\n");
  if (s.request.kind == EigenRequest::Kind::none && !o.save_hessian)
    warn(r, "--eigen none without --save-hessian computes H and writes only layout.json and summary.json");
  if (s.plan.total > s.plan.available)
    run_collectively(comm, [&] {
      throw ResourceError(memory_refusal(s, ranks_that_fit(o, s, r.size, s.plan.available)));
    });
  OutputDir out(o.out, o.force, comm);

  std::unique_ptr<Checkpoint> checkpoint;
  if (!o.checkpoint.empty()) {
    checkpoint = std::make_unique<Checkpoint>(o.checkpoint, checkpoint_identity(o, s), o.resume, comm);
    if (checkpoint->panel_width() != s.engine->panel_width())
      run_collectively(comm, [&] {
        HvpOptions options;
        options.panel = checkpoint->panel_width();
        options.mode = parse_hvp_mode(o.hvp_mode);
        s.engine = std::make_unique<HvpEngine>(*s.loaded.problem, options);
      });
  }
  ProcessGrid grid(comm, s.rows, s.cols);

  const auto& layout = problem.layout();
  say(r, o,
      "dhess: " + problem.description() + "\n" +
          (layout.parameters().size() <= 12 ? layout.table()
                                            : "n = " + std::to_string(s.n) + " parameters in " +
                                                  std::to_string(layout.parameters().size()) +
                                                  " tensors (see layout.json)\n") +
          "dhess: " + std::to_string(r.size) + " rank(s), grid " + std::to_string(s.rows) + "x" +
          std::to_string(s.cols) + ", block " + std::to_string(s.block) + ", " + dtype_name(dtype) + ", " +
          std::to_string(s.loaded.threads) + " thread(s)/rank, device " + s.loaded.device + ", HVP " +
          s.engine->mode_description() + ", plan " + human_bytes(s.plan.total) + "/rank\n" +
          (checkpoint ? "dhess: checkpoint " + o.checkpoint + " (" + std::to_string(checkpoint->panels_found()) +
                            " panel(s) already done)\n"
                      : ""));

  json summary;
  summary["dhess_version"] = "0.1.0";
  summary["command_line"] = o.command_line;
  summary["n"] = s.n;
  summary["ranks"] = r.size;
  summary["grid"] = {s.rows, s.cols};
  summary["block"] = s.block;
  summary["dtype"] = dtype_name(dtype);
  summary["threads_per_rank"] = s.loaded.threads;
  summary["devices"] = gather_strings(r, s.loaded.device);
  summary["out"] = o.out;
  summary["model"] = model_summary(o, s.loaded);
  summary["memory"]["plan_bytes_per_rank"] = s.plan.to_json();
  if (!s.solver_note.empty()) summary["solver_note"] = s.solver_note;
  summary["setup_seconds"] = MPI_Wtime() - t0;

  if (dtype == Dtype::float64)
    dense<double>(o, r, s.loaded, *s.engine, grid, s.block, s.request, s.solver, out, checkpoint.get(), summary);
  else
    dense<float>(o, r, s.loaded, *s.engine, grid, s.block, s.request, s.solver, out, checkpoint.get(), summary);
}

void run_plan(const RunOptions& o, int planned_ranks, bool as_json, MPI_Comm comm) {
  Rank r(comm);
  const int ranks = planned_ranks > 0 ? planned_ranks : r.size;
  Setup s = prepare(o, r, ranks);
  // The plan for `ranks` ranks; the node's memory is shared by the ranks placed on it.
  const int per_node = planned_ranks > 0 ? std::max(1, std::min(ranks, s.place.local_size * ranks / r.size))
                                         : s.place.local_size;
  s.solver = parse_solver(o.solver);
  s.solver_note.clear();
  s.plan = plan_memory(o, s.n, s.block, s.rows, s.cols, s.request, s.solver, dtype_bytes(o.problem.dtype),
                       s.engine->panel_width(), per_node);
  agree_on_plan(r, s.plan);
  prefer_solver_that_fits(o, r, s, per_node);

  // Time a few columns on this rank: the HVP rate per rank.
  const int64_t k = std::min<int64_t>(s.n, std::max<int64_t>(s.engine->panel_width(), 8));
  double rate = 0;
  run_collectively(comm, [&] {
    std::vector<double> panel(static_cast<std::size_t>(s.n * k));
    std::vector<float> panel32(o.problem.dtype == Dtype::float32 ? panel.size() : 0);
    auto columns = [&](int64_t j0) {
      if (o.problem.dtype == Dtype::float64)
        s.engine->columns(j0, j0 + k, panel.data());
      else
        s.engine->columns(j0, j0 + k, panel32.data());
    };
    columns(0);  // builds the first-order graph and checks the batched path once
    // Panels for half a second at least: one small panel's time varied by 50% between runs.
    const double t = MPI_Wtime();
    int64_t done = 0;
    do {
      columns(std::min(k + done, s.n - k));
      done += k;
    } while (MPI_Wtime() - t < 0.5 && done < s.n);
    rate = static_cast<double>(done) / std::max(MPI_Wtime() - t, 1e-9);
  });
  const Solver solver = choose_solver(s.solver, s.request, s.block, s.rows, s.cols, s.n);
  const SolverTiming solver_time = s.request.kind == EigenRequest::Kind::none
                                       ? SolverTiming{}
                                       : time_solver(o, r, s, solver, ranks);
  const double solver_seconds = solver_time.seconds;
  // Ranks on one node share its memory bus and last-level cache: timed alone, a rank is faster than
  // it will be beside the others (1 -> 2 ranks gave 1.68x, 84% per rank, on the 2-core machine of
  // bench/RESULTS.md). Timed under mpirun with the ranks of the run, the sharing is in the timing.
  const bool alone = s.place.local_size < per_node;
  const double hvp_seconds = static_cast<double>(s.n) / (rate * ranks * (alone ? 0.85 : 1.0));
  const std::string hvp_basis = std::to_string(r.size) + " process(es) timed " +
                                (alone ? "alone; 85% per rank assumed for " + std::to_string(per_node) +
                                             " ranks sharing a node"
                                       : "side by side as in the run");
  const bool fits = s.plan.total <= s.plan.available;
  json plan = {{"n", s.n},
               {"ranks", ranks},
               {"grid", {s.rows, s.cols}},
               {"block", s.block},
               {"dtype", dtype_name(o.problem.dtype)},
               {"eigen", s.request.text()},
               {"solver", solver_name(solver)},
               {"memory_bytes_per_rank", s.plan.to_json()},
               {"hvp_count", s.n},
               {"hvp_columns_per_second_per_rank", rate},
               {"estimated_seconds", {{"hvp", hvp_seconds}, {"eigensolver", solver_seconds},
                                      {"total", hvp_seconds + solver_seconds}}},
               {"hvp_estimate_basis", hvp_basis},
               {"eigensolver_estimate_basis", solver_time.basis},
               {"eigensolver_estimate_is_upper_bound", solver_time.upper_bound},
               {"fits", fits}};
  if (!s.solver_note.empty()) plan["solver_note"] = s.solver_note;
  if (!fits) plan["suggested_ranks"] = ranks_that_fit(o, s, ranks, s.plan.available);
  if (as_json) {
    say(r, o, plan.dump(2) + "\n");
  } else {
    const auto& m = s.plan;
    const char* about = solver_time.upper_bound ? "at most about" : "about";
    char text[2048];
    std::snprintf(text, sizeof text,
                  "dhess plan: %s\n"
                  "  n = %lld parameters, %d rank(s) on a %dx%d grid, block %d, %s, --eigen %s\n"
                  "  memory per rank: H share %s + eigenvectors %s + solver workspace %s + panel %s + process %s"
                  " = %s; available %s per rank: %s\n"
                  "  Hessian-vector products: %lld columns at %.1f columns/s per rank -> %.1f s (%s)\n"
                  "  eigensolver (%s): %s %.1f s (%s); total %s %.1f s\n",
                  s.loaded.problem->description().c_str(), static_cast<long long>(s.n), ranks, s.rows, s.cols,
                  s.block, dtype_name(o.problem.dtype), s.request.text().c_str(), human_bytes(m.h).c_str(),
                  human_bytes(m.z).c_str(), human_bytes(m.workspace).c_str(), human_bytes(m.panel).c_str(),
                  human_bytes(m.baseline).c_str(), human_bytes(m.total).c_str(), human_bytes(m.available).c_str(),
                  fits ? "fits" : "DOES NOT FIT", static_cast<long long>(s.n), rate, hvp_seconds, hvp_basis.c_str(),
                  plan["solver"].get<std::string>().c_str(), about, solver_seconds, solver_time.basis.c_str(),
                  about, hvp_seconds + solver_seconds);
    say(r, o, text);
    if (!s.solver_note.empty()) say(r, o, "  " + s.solver_note + "\n");
    if (!fits)
      say(r, o, "  " + memory_refusal(s, plan["suggested_ranks"].get<int64_t>()) + "\n");
  }
}

void run_layout(const RunOptions& o, MPI_Comm comm) {
  Rank r(comm);
  Loaded l = load(o, r);
  OutputDir out(o.out, o.force, comm);
  say(r, o, "dhess: " + l.problem->description() + "\n" + l.problem->layout().table());
  run_collectively(comm, [&] {
    if (r.root()) write_json(out.staged("layout.json"), l.problem->layout().to_json());
  });
  out.commit({"layout.json"});
  say(r, o, "dhess: wrote " + out.final_path("layout.json") + "\n");
}

void run_export(const RunOptions& o, const std::string& model_path, const std::string& data_path, MPI_Comm comm) {
  Rank r(comm);
  Loaded l = load(o, r);
  run_collectively(comm, [&] {
    if (r.root()) l.problem->export_to(model_path, data_path);
  });
  say(r, o, "dhess: wrote " + model_path + " and " + data_path + " (" + l.problem->description() + ")\n");
}

}  // namespace dhess
