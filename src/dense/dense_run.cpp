#include "dhess/dense/dense_run.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "dhess/core/collective.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/core/interrupt.hpp"
#include "dhess/core/memory.hpp"
#include "dhess/dense/assembler.hpp"
#include "dhess/dense/block_curvature.hpp"
#include "dhess/dense/column_split_operator.hpp"
#include "dhess/dense/eigen_report.hpp"
#include "dhess/io/checkpoint.hpp"
#include "dhess/io/hdf5_matrix.hpp"
#include "dhess/io/json_file.hpp"
#include "dhess/io/npy.hpp"
#include "dhess/io/output_dir.hpp"
#include "dhess/linalg/solver_timing.hpp"
#include "dhess/report/plot.hpp"
#include "dhess/report/summary.hpp"
#include "dhess/run/feasibility.hpp"
#include "dhess/run/identity.hpp"
#include "dhess/torch/device.hpp"

namespace dhess {
namespace {

using json = nlohmann::json;

// One dense run in element type T, phase by phase; every phase records its time and peak memory.
template <typename T>
class DenseRun {
 public:
  DenseRun(const RunOptions& o, const Rank& r, DenseSetup& s, OutputDir& out, const Checkpoint* checkpoint,
           json& summary)
      : o_(o), r_(r), s_(s), out_(out), checkpoint_(checkpoint), summary_(summary), grid_(r.comm, s.rows, s.cols) {}

  void run() {
    const double start = MPI_Wtime();
    reset_peak_rss();
    BlockCyclicMatrix<T> h(grid_, s_.n, s_.n, s_.block, s_.block);
    if (!restore_matrix(h)) {
      assemble_columns(h);
      symmetrize_matrix(h);
      keep_matrix(h);
    }
    save_matrix(h);
    report_blocks(h);
    Spectrum<T> spectrum = solve_matrix(h);
    report(spectrum);
    report_log_determinants(spectrum.values);
    timings_["total"] = MPI_Wtime() - start;
    write_summary();
  }

 private:
  void phase_peak(const char* name) {
    peaks_[name] = gather_doubles(r_, static_cast<double>(peak_rss_bytes()));
    reset_peak_rss();
  }

  // Every rank stops at the same step when any received SIGUSR1/SIGTERM (exit 75).
  void stop_if_asked(const std::string& when, const std::string& kept) const {
    if (!stop_requested(r_.comm)) return;
    Interrupted stop("stopped by a signal " + when + "; " + kept_text(kept));
    stop.mark_agreed();  // every rank saw the same allreduced flag at the same step
    throw stop;
  }

  std::string kept_text(const std::string& kept) const {
    return checkpoint_ ? kept + " in checkpoint '" + checkpoint_->dir() + "': rerun the same command with --resume"
                       : std::string("no --checkpoint was given, so nothing was kept");
  }

  // What a saved H is valid for.
  json distribution() const {
    return {{"ranks", r_.size},
            {"grid", {s_.rows, s_.cols}},
            {"block", s_.block},
            {"n", s_.n},
            {"element_bytes", sizeof(T)}};
  }

  // H from the checkpoint when it was saved before an interrupted eigensolver on this grid:
  // no Hessian-vector product at all. Saved on another grid, H is reassembled from the panels.
  bool restore_matrix(BlockCyclicMatrix<T>& h) {
    json saved;
    if (!checkpoint_ || !checkpoint_->load_hessian(h, distribution(), saved)) return false;
    symmetry_ = {saved["asymmetry"].get<double>(), saved["frobenius"].get<double>()};
    summary_["asymmetry"] = symmetry_.asymmetry;
    summary_["trace"] = saved["trace"];
    summary_["hvp"]["hessian_restored_from_checkpoint"] = true;
    stats_.panel_width = s_.engine->panel_width();
    timings_["hvp"] = 0.0;
    timings_["redistribution"] = 0.0;
    say(r_, o_,
        "dhess: the symmetrized Hessian comes from checkpoint '" + checkpoint_->dir() +
            "' (saved before an interrupted eigensolver): no Hessian-vector product\n");
    phase_peak("restore_hessian");
    return true;
  }

  void keep_matrix(const BlockCyclicMatrix<T>& h) {
    if (!checkpoint_) return;
    checkpoint_->save_hessian(h, {{"distribution", distribution()},
                                  {"asymmetry", symmetry_.asymmetry},
                                  {"frobenius", symmetry_.frobenius},
                                  {"trace", summary_["trace"]}});
  }

  void assemble_columns(BlockCyclicMatrix<T>& h) {
    const int64_t n = s_.n;
    Progress progress("columns", n, r_.root() && !o_.quiet);
    AssemblyHooks<T> hooks;
    if (checkpoint_) {
      hooks.lookup = [&](int64_t j0, int64_t j1, T* panel) { return checkpoint_->load<T>(j0, j1, n, panel); };
      hooks.sink = [&](int64_t j0, int64_t j1, const T* panel) { checkpoint_->save<T>(j0, j1, n, panel); };
    }
    hooks.after_round = [&](int64_t done) {
      stop_if_asked("after " + std::to_string(done) + " of " + std::to_string(n) + " columns", "finished panels are");
    };
    stats_ = assemble<T>(*s_.engine, grid_, h, progress, hooks);
    phase_peak("hvp_and_assembly");
    const auto hvp = gather_doubles(r_, stats_.hvp_seconds);
    const auto redistribution = gather_doubles(r_, stats_.redistribute_seconds);
    timings_["hvp"] = *std::max_element(hvp.begin(), hvp.end());
    timings_["redistribution"] = *std::max_element(redistribution.begin(), redistribution.end());
    timings_["hvp_per_rank"] = hvp;
  }

  // H ← (H + Hᵀ)/2 where the columns hold both triangles, the lower one mirrored elsewhere, with
  // the asymmetry it had and its trace.
  void symmetrize_matrix(BlockCyclicMatrix<T>& h) {
    const double t = MPI_Wtime();
    symmetry_ = symmetrize(grid_, h, s_.loaded.problem->layout().offsets());
    summary_["asymmetry"] = symmetry_.asymmetry;
    summary_["trace"] = trace(grid_, h);
    timings_["symmetrize"] = MPI_Wtime() - t;
    if (symmetry_.asymmetry > (std::is_same_v<T, double> ? 1e-8 : 1e-3))
      warn(r_, "Hessian asymmetry ||H-H^T||/||H|| = " + std::to_string(symmetry_.asymmetry) +
                   " before symmetrization (non-smooth or non-deterministic model?)");
  }

  void save_matrix(const BlockCyclicMatrix<T>& h) {
    if (o_.save_hessian) {
      const double t = MPI_Wtime();
      write_hdf5_matrix(out_.staged("hessian.h5"), "hessian", h, 0, s_.n, r_.comm);
      files_.push_back("hessian.h5");
      io_seconds_ += MPI_Wtime() - t;
    }
    phase_peak("symmetrize_and_save");
  }

  // --blocks: each block's trace and largest eigenvalues from the assembled matrix, before the
  // eigensolver overwrites it.
  void report_blocks(const BlockCyclicMatrix<T>& h) {
    if (o_.blocks.kind == BlockSpec::Kind::none) return;
    const double t = MPI_Wtime();
    const auto blocks = group_parameters(s_.loaded.problem->layout(), o_.blocks);
    const auto curvature = dense_block_curvature(grid_, h, blocks, o_.block_top);
    const double total = summary_["trace"].get<double>();
    summary_["blocks"] = blocks_json(curvature, total);
    run_collectively(r_.comm, [&] {
      if (r_.root()) write_json(out_.staged("blocks.json"), summary_["blocks"]);
    });
    files_.push_back("blocks.json");
    say(r_, o_, blocks_table(curvature, total));
    timings_["blocks"] = MPI_Wtime() - t;
    phase_peak("blocks");
  }

  // --prior-precision: log det(C + delta I) from the eigenvalues, for a Laplace approximation.
  void report_log_determinants(const std::vector<double>& values) {
    if (o_.prior_precisions.empty()) return;
    summary_["log_determinants"] = log_determinants(values, o_.prior_precisions);
    say(r_, o_, log_determinant_text(summary_["log_determinants"]));
  }

  // The solver is one blocking library call that cannot poll the stop flag: a StopWatch ends
  // every rank with exit 75 within a fraction of a second instead.
  Spectrum<T> solve_matrix(BlockCyclicMatrix<T>& h) {
    stop_if_asked("before the eigensolver", "the assembled Hessian is");
    const double t = MPI_Wtime();
    Spectrum<T> spectrum;
    {
      StopWatch watch("stopped by a signal during the eigensolver; " + kept_text("the assembled Hessian is"),
                      r_.root());
      spectrum = solve(grid_, h, s_.request, s_.solver, s_.sketch_columns, sketch_products(), sketch_seconds());
    }
    h.release();
    timings_["eigensolver"] = MPI_Wtime() - t;
    phase_peak("eigensolver");
    if (spectrum.lowrank.tried) report_lowrank(spectrum.lowrank, spectrum.routine);
    return spectrum;
  }

  // The rank-revealing sketch multiplies by Hessian-vector products, the ranks splitting the
  // vectors as they split H's columns: a product costs what a column did, where pdgemm with the
  // assembled H costs 2 n^2 flops a vector (bench/RESULTS.md).
  ShardedOperator sketch_products() const {
    if constexpr (std::is_same_v<T, double>) {
      if (s_.sketch_columns > 0) return ColumnSplitOperator(*s_.engine, s_.n, grid_.comm());
    }
    return {};
  }

  // --solver auto's sketch may take kLowrankRegret of the full solver's time: of a cheap lower bound
  // on it first (its flops at dgemm's rate), and where the sketch runs longer, of an estimate from
  // timing that solver on random matrices -- only where that lower-bound share already pays for the
  // timing's two seconds, which count in the sketch's time. --solver lowrank's has no limit.
  SketchTime sketch_seconds() {
    if (s_.sketch_columns == 0 || o_.solver != Solver::automatic) return {};
    constexpr double kTiming = 2.0;
    sketch_budget_ = kLowrankRegret * solver_seconds_lower_bound(s_.request, s_.n, r_.size, r_.comm);
    if (sketch_budget_ < kTiming) return {sketch_budget_, {}};
    const auto refine = [this, kTiming] {
      const double free = std::max(0.0, s_.plan.available - s_.plan.total);
      full_solver_estimate_ =
          time_solver(s_.solver, s_.request, s_.n, s_.block, o_.problem.dtype, r_.size, free, r_.comm, kTiming).seconds;
      sketch_budget_ = std::max(sketch_budget_, kLowrankRegret * full_solver_estimate_);
      return sketch_budget_;
    };
    return {sketch_budget_, refine};
  }

  // What the rank-revealing sketch found, and who answered when it stopped at its bound.
  void report_lowrank(const LowRankReport& l, const std::string& routine) {
    json j = {{"answered", l.answered},
              {"rank", l.rank},
              {"sketch_products", l.sketch_columns},
              {"sketch_bound", s_.sketch_columns},
              {"seconds", l.seconds}};
    if (sketch_budget_ > 0) j["time_budget_seconds"] = sketch_budget_;
    if (full_solver_estimate_ > 0) j["full_solver_estimate_seconds"] = full_solver_estimate_;
    if (l.answered) {
      j["certificate"] = l.certificate;
      j["zero_eigenvalues"] = s_.n - l.rank;
      say(r_, o_,
          "dhess: lowrank: rank " + std::to_string(l.rank) + " of " + std::to_string(s_.n) + ", the other " +
              std::to_string(s_.n - l.rank) + " eigenvalues are zero within " + scientific(l.certificate) +
              " max|lambda| (certified with fresh probes), " + std::to_string(l.sketch_columns) + " products\n");
    } else {
      j["why_not"] = l.why_not;
      say(r_, o_, "dhess: lowrank did not answer: " + l.why_not + "; " + routine + " did\n");
    }
    summary_["lowrank"] = j;
  }

  void report(const Spectrum<T>& spectrum) {
    const double t = MPI_Wtime();
    json check = json::object();
    if (!spectrum.values.empty()) {
      summary_["eigenvalues"] =
          eigenvalue_summary(spectrum.values, s_.request, std::is_same_v<T, double> ? 1e-8 : 1e-4);
      summary_["solver"] = spectrum.routine;
    }
    if (spectrum.vectors) check = check_and_write_vectors(spectrum);
    if (std::is_same_v<T, float>) {
      check["float32_note"] =
          "float32 eigenvalues carry absolute errors near 1e-6 * max|lambda|; values below that are not resolved";
      if (symmetry_.asymmetry > 1e-4)
        warn(r_, "float32 asymmetry " + std::to_string(symmetry_.asymmetry) + " is large: prefer --dtype float64");
    }
    check["asymmetry"] = symmetry_.asymmetry;
    summary_["self_check"] = check;
    write_values_and_layout(spectrum.values);
    io_seconds_ += MPI_Wtime() - t;
    phase_peak("output");
  }

  json check_and_write_vectors(const Spectrum<T>& spectrum) {
    // ‖H‖₂ is max|λ| when the whole spectrum is known; otherwise ‖H‖_F bounds it from above.
    const double norm = s_.request.kind == EigenRequest::Kind::all
                            ? std::max(std::abs(spectrum.values.front()), std::abs(spectrum.values.back()))
                            : symmetry_.frobenius;
    json check = self_check(r_, *s_.engine, spectrum, norm);
    const double limit = std::is_same_v<T, double> ? 1e-8 : 1e-3;
    if (check["max_residual"].get<double>() > limit || check["orthogonality"].get<double>() > limit)
      warn(r_, "eigen self-check above " + std::to_string(limit) + ": residual " +
                   std::to_string(check["max_residual"].get<double>()) + ", orthogonality " +
                   std::to_string(check["orthogonality"].get<double>()));
    const ParameterLayout& layout = s_.loaded.problem->layout();
    const int64_t m = static_cast<int64_t>(spectrum.values.size());
    write_hdf5_matrix(out_.staged("eigenvectors.h5"), "eigenvectors", *spectrum.vectors, spectrum.first_column, m,
                      r_.comm);
    files_.push_back("eigenvectors.h5");
    const auto shares = parameter_shares(r_, *spectrum.vectors, spectrum.first_column, m, layout);
    summary_["eigenvalues"]["parameter_share"] = shares_json(shares, spectrum.values, layout, 5);
    run_collectively(r_.comm, [&] {
      if (r_.root())
        write_npy(out_.staged("eigenvector_shares.npy"), shares.data(),
                  {m, static_cast<int64_t>(layout.parameters().size())});
    });
    files_.push_back("eigenvector_shares.npy");
    return check;
  }

  void write_values_and_layout(const std::vector<double>& values) {
    run_collectively(r_.comm, [&] {
      if (!r_.root()) return;
      if (!values.empty())
        write_npy(out_.staged("eigenvalues.npy"), values.data(), {static_cast<int64_t>(values.size())});
      write_json(out_.staged("layout.json"), s_.loaded.problem->layout().to_json());
    });
    if (!values.empty()) {
      files_.push_back("eigenvalues.npy");
      draw();
    }
    files_.push_back("layout.json");
  }

  void draw() {
    std::string problem;
    if (r_.root())
      problem = draw_spectrum({"--out", out_.staged("spectrum.png"), "--eigenvalues", out_.staged("eigenvalues.npy"),
                               "--title",
                               std::string(curvature_title(o_.problem.curvature)) + " spectrum (exact, " +
                                   s_.request.text() + "), n = " + std::to_string(s_.n)});
    int drawn = problem.empty() ? 1 : 0;
    MPI_Bcast(&drawn, 1, MPI_INT, 0, r_.comm);
    if (drawn)
      files_.push_back("spectrum.png");
    else
      warn(r_, "spectrum.png not drawn: " + problem);
  }

  void write_summary() {
    timings_["io"] = io_seconds_;
    std::vector<double> per_rank(r_.size, 0.0);
    for (const auto& phase : peaks_)
      for (int i = 0; i < r_.size; ++i) per_rank[i] = std::max(per_rank[i], phase[i].template get<double>());
    const json torch_notes = report_torch_warnings(r_);
    summary_["timings_seconds"] = timings_;
    summary_["hvp"]["mode"] = s_.engine->mode_description();
    summary_["hvp"]["unbatched_ops"] = torch_notes["unbatched_ops"];
    summary_["torch_warnings"] = torch_notes["other"];
    summary_["hvp"]["columns_restored_from_checkpoint"] =
        gather_doubles(r_, static_cast<double>(stats_.columns_restored));
    summary_["hvp"]["panel_width"] = stats_.panel_width;
    const double hvp_seconds = timings_["hvp"].get<double>();
    summary_["hvp"]["columns_per_second"] = hvp_seconds > 0 ? static_cast<double>(s_.n) / hvp_seconds : 0.0;
    summary_["memory"]["peak_rss_per_rank"] = per_rank;
    summary_["memory"]["peak_rss_per_phase"] = peaks_;
    summary_["memory"]["peak_rss_max_human"] = human_bytes(*std::max_element(per_rank.begin(), per_rank.end()));
    files_.push_back("summary.json");
    summary_["files"] = files_;
    run_collectively(r_.comm, [&] {
      if (r_.root()) write_json(out_.staged("summary.json"), summary_);
    });
    out_.commit(files_);
    say(r_, o_, human_summary(summary_));
  }

  const RunOptions& o_;
  const Rank& r_;
  DenseSetup& s_;
  OutputDir& out_;
  const Checkpoint* checkpoint_;
  json& summary_;
  ProcessGrid grid_;
  AssemblyStats stats_;
  SymmetryStats symmetry_;
  json timings_, peaks_;
  double io_seconds_ = 0;
  double sketch_budget_ = 0, full_solver_estimate_ = 0;  // seconds: auto's sketch's limit, and what it came from
  std::vector<std::string> files_;
};

// The panel width a checkpoint was written with wins: its panels are keyed by their columns.
std::unique_ptr<Checkpoint> open_checkpoint(const RunOptions& o, const Rank& r, DenseSetup& s) {
  if (o.checkpoint.empty()) return nullptr;
  json identity = problem_identity(o, r, s.loaded, {{"method", "dense"}});
  identity["panel_width"] = s.engine->panel_width();
  auto checkpoint = std::make_unique<Checkpoint>(o.checkpoint, identity, o.resume, r.comm);
  if (checkpoint->panel_width() != s.engine->panel_width())
    run_collectively(r.comm, [&] {
      HvpOptions options;
      options.panel = checkpoint->panel_width();
      options.mode = o.hvp_mode;
      options.compiled = o.compiled;
      s.engine = std::make_unique<HvpEngine>(*s.loaded.problem, options);
    });
  return checkpoint;
}

std::string run_header(const RunOptions& o, const Rank& r, const DenseSetup& s, const Checkpoint* checkpoint) {
  const Problem& problem = *s.loaded.problem;
  const auto& layout = problem.layout();
  return "dhess: " + problem.description() + "\n" +
         (layout.parameters().size() <= 12
              ? layout.table()
              : "n = " + std::to_string(s.n) + " parameters in " + std::to_string(layout.parameters().size()) +
                    " tensors (see layout.json)\n") +
         "dhess: " + std::to_string(r.size) + " rank(s), grid " + std::to_string(s.rows) + "x" +
         std::to_string(s.cols) + ", block " + std::to_string(s.block) + ", " + dtype_name(o.problem.dtype) + ", " +
         std::to_string(s.loaded.threads) + " thread(s)/rank, device " + s.loaded.device + ", HVP " +
         s.engine->mode_description() + ", plan " + human_bytes(s.plan.total) + "/rank\n" +
         (checkpoint ? "dhess: checkpoint " + o.checkpoint + " (" + std::to_string(checkpoint->panels_found()) +
                           " panel(s) already done)\n"
                     : "");
}

json summary_head(const RunOptions& o, const Rank& r, const DenseSetup& s) {
  json summary;
  summary["dhess_version"] = DHESS_VERSION;
  summary["libtorch"] = libtorch_build();
  summary["command_line"] = o.command_line;
  summary["n"] = s.n;
  summary["ranks"] = r.size;
  summary["grid"] = {s.rows, s.cols};
  summary["block"] = s.block;
  summary["dtype"] = dtype_name(o.problem.dtype);
  summary["threads_per_rank"] = s.loaded.threads;
  summary["devices"] = gather_strings(r, s.loaded.device);
  summary["out"] = o.out;
  summary["model"] = model_summary(o, s.loaded);
  summary["memory"]["plan_bytes_per_rank"] = s.plan.to_json();
  if (!s.solver_note.empty()) summary["solver_note"] = s.solver_note;
  return summary;
}

}  // namespace

void run_dense(const RunOptions& o, MPI_Comm comm) {
  Rank r(comm);
  const double t0 = MPI_Wtime();
  DenseSetup s = prepare_dense(o, r, r.size, node_placement(comm, process_env()).local_size);
  if (!s.solver_note.empty()) say(r, o, "dhess: " + s.solver_note + "\n");
  if (s.request.kind == EigenRequest::Kind::none && !o.save_hessian)
    warn(r, "--eigen none without --save-hessian computes H and writes only layout.json and summary.json");
  if (!fits(s)) run_collectively(comm, [&] { throw ResourceError(refusal(o, s, r.size)); });
  OutputDir out(o.out, o.force, comm);
  const std::unique_ptr<Checkpoint> checkpoint = open_checkpoint(o, r, s);
  say(r, o, run_header(o, r, s, checkpoint.get()));
  json summary = summary_head(o, r, s);
  summary["setup_seconds"] = MPI_Wtime() - t0;
  if (o.problem.dtype == Dtype::float64)
    DenseRun<double>(o, r, s, out, checkpoint.get(), summary).run();
  else
    DenseRun<float>(o, r, s, out, checkpoint.get(), summary).run();
}

}  // namespace dhess
