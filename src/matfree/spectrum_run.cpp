#include "dhess/matfree/spectrum_run.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>

#include "dhess/core/collective.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/core/interrupt.hpp"
#include "dhess/core/memory.hpp"
#include "dhess/io/checkpoint.hpp"
#include "dhess/io/json_file.hpp"
#include "dhess/linalg/probes.hpp"
#include "dhess/linalg/range_finder.hpp"
#include "dhess/matfree/data_parallel_operator.hpp"
#include "dhess/matfree/spectrum_plan.hpp"
#include "dhess/matfree/trace.hpp"
#include "dhess/report/summary.hpp"
#include "dhess/run/feasibility.hpp"
#include "dhess/run/identity.hpp"
#include "dhess/torch/device.hpp"
#include "spectrum_phases.hpp"

namespace dhess {
namespace {

using json = nlohmann::json;

bool exact_diagonal_wanted(const SpectrumOptions& so, int64_t n) {
  return so.diagonal == DiagonalMode::exact || (so.diagonal == DiagonalMode::automatic && n <= 20000);
}

// The vectors the phases will multiply first, entry for entry as they make them (full n-vectors):
// SLQ's starting vectors, the trace's first probes (Hutch++'s sketch, then Hutchinson's), the exact
// diagonal's unit vectors or the estimated one's probes. The start-up's measuring products are made
// of these and kept for those phases (DataParallelOperator::keep), where the vectors and their
// products take at most 2% of the memory per rank; else they are of unit vectors, and let go.
StartupProducts first_vectors(const SpectrumOptions& so, int64_t n, double budget_bytes) {
  StartupProducts s;
  if (16.0 * kMeasuringVectors * static_cast<double>(n) > 0.02 * budget_bytes) return s;
  const uint64_t seed = so.seed;
  auto add = [&](int64_t count, const std::function<double(uint64_t, uint64_t)>& entry) {
    for (int64_t c = 0; c < count && s.count < kMeasuringVectors; ++c, ++s.count)
      for (int64_t row = 0; row < n; ++row) s.vectors.push_back(entry(c, row));
  };
  add(so.slq_probes, [&](uint64_t c, uint64_t row) { return slq_start(seed, c, row, n); });
  if (so.trace_probes > 0 && so.trace_estimator != TraceEstimator::hutchinson)
    add(std::max<int64_t>(1, so.trace_probes / 3),
        [&](uint64_t c, uint64_t row) { return rademacher(seed, kHutchppSketchStream + c, row); });
  if (so.trace_probes > 0 && so.trace_estimator != TraceEstimator::hutchpp)
    add(so.trace_probes, [&](uint64_t c, uint64_t row) { return rademacher(seed, kHutchinsonStream + c, row); });
  if (exact_diagonal_wanted(so, n))
    add(n, [](uint64_t c, uint64_t row) { return c == row ? 1.0 : 0.0; });
  else if (so.diagonal != DiagonalMode::none)
    add(so.diagonal_probes, [&](uint64_t c, uint64_t row) { return rademacher(seed, kDiagonalStream + c, row); });
  return s;
}

// One matrix-free run, phase by phase. Each finished phase is kept in the checkpoint (and taken
// from it on --resume); a stop signal ends the run between phases (exit 75).
class SpectrumRun {
 public:
  SpectrumRun(const RunOptions& o, const SpectrumOptions& so, const Rank& r, Loaded& l, HvpEngine& engine,
              const SpectrumPlan& plan, StartupProducts&& startup, OutputDir& out, const Checkpoint* checkpoint)
      : o_(o),
        so_(so),
        r_(r),
        l_(l),
        engine_(engine),
        shard_(RowShard::of(l.problem->layout().n(), r.rank, r.size)),
        plan_(plan),
        out_(out),
        checkpoint_(checkpoint),
        op_(engine, shard_, r.comm, plan.product_columns),
        apply_([this](const double* x, int64_t k, double* y) {
          stop_if_asked("during the " + phase_ + " phase");
          op_(x, k, y);
        }),
        blocks_(o.blocks.kind == BlockSpec::Kind::none ? std::vector<ParameterBlock>()
                                                       : group_parameters(l.problem->layout(), o.blocks)) {
    op_.keep(std::move(startup));
  }

  void run(double start) {
    timings_["startup"] = MPI_Wtime() - start;
    if (so_.top + so_.bottom > 0) lanczos_ = phase<LanczosResult>("lanczos", [&] { return lanczos(); });
    if (so_.nonzero) nonzero_ = phase<NonzeroSpectrum>("nonzero", [&] { return nonzero(); });
    if (so_.slq_probes > 0) results_.nodes = phase<std::vector<QuadratureNode>>("slq", [&] { return slq(); });
    if (so_.trace_probes > 0) phase<json>("trace", [&] { return trace(); });
    if (so_.diagonal != DiagonalMode::none)
      results_.diagonal = phase<DiagonalResult>("diagonal", [&] { return diagonal(); });
    if (!blocks_.empty()) block_curvature_ = phase<std::vector<BlockCurvature>>("blocks", [&] { return blocks(); });
    summarize_phases();
    const double t = MPI_Wtime();
    std::vector<std::string> files =
        write_spectrum_files(r_, results_, shard_, l_.problem->layout(), curvature_title(o_.problem.curvature), out_);
    if (!blocks_.empty()) {
      run_collectively(r_.comm, [&] {
        if (r_.root()) write_json(out_.staged("blocks.json"), summary_["blocks"]);
      });
      files.push_back("blocks.json");
    }
    timings_["io"] = MPI_Wtime() - t;
    timings_["total"] = MPI_Wtime() - start;
    write_summary(files);
  }

 private:
  // Times a phase. A stop signal ends the run at the next product (or after the phase), every
  // rank at the same step; finished phases stay in the checkpoint.
  template <typename Result>
  Result phase(const char* name, const std::function<Result()>& compute) {
    phase_ = name;
    const double t = MPI_Wtime();
    Result result = compute();
    timings_[name] = MPI_Wtime() - t;
    finished_ += std::string(finished_.empty() ? "" : ", ") + name;
    stop_if_asked(std::string("after the ") + name + " phase");
    return result;
  }

  void stop_if_asked(const std::string& when) const {
    if (!stop_requested(r_.comm)) return;
    const std::string kept = finished_.empty() ? "no phase had finished, so nothing was kept"
                             : checkpoint_     ? "finished phases (" + finished_ + ") are in checkpoint '" +
                                                 checkpoint_->dir() + "': rerun the same command with --resume"
                                           : std::string("no --checkpoint was given, so nothing was kept");
    Interrupted stop("stopped by a signal " + when + "; " + kept);
    stop.mark_agreed();  // every rank saw the same allreduced flag
    throw stop;
  }

  // A record and k row-sharded vectors from the checkpoint, when it holds them.
  bool restore(const std::string& name, json& record, std::vector<double>* vectors) {
    if (!checkpoint_ || !checkpoint_->load_record(name, record)) return false;
    if (!vectors) return true;
    const int64_t k = record.value("columns", int64_t(0));
    std::vector<double> all(r_.root() ? static_cast<std::size_t>(shard_.n * k) : 0);
    if (!checkpoint_->load_array(name + "_vectors", shard_.n, k, all.data()))
      run_collectively(r_.comm, [&] {
        throw InputError("checkpoint '" + checkpoint_->dir() + "' lacks " + name + "_vectors.panel");
      });
    *vectors = scatter_columns_from_root(all, shard_, k, r_.comm);
    return true;
  }

  void keep(const std::string& name, json record, const std::vector<double>* vectors, int64_t k) const {
    if (!checkpoint_) return;
    if (vectors) {
      checkpoint_->save_array(name + "_vectors", shard_.n, k,
                              gather_columns_to_root(*vectors, shard_, k, r_.comm).data());
      record["columns"] = k;
    }
    checkpoint_->save_record(name, record);
  }

  LanczosResult lanczos() {
    LanczosResult result;
    json record;
    if (restore("lanczos", record, &result.vectors)) {
      result.steps = record["steps"];
      result.basis = record.value("basis", int64_t(0));
      result.restarts = record.value("restarts", int64_t(0));
      result.norm_estimate = record["norm_estimate"];
      for (const auto& p : record["pairs"]) result.pairs.push_back({p[0], p[1], p[2]});
      return result;
    }
    const LanczosOptions lo{so_.top, so_.bottom, so_.max_steps, so_.tolerance, so_.seed, {}, plan_.lanczos_basis};
    result = lanczos_extremes(apply_, shard_, lo, r_.comm);
    json pairs = json::array();
    for (const auto& p : result.pairs) pairs.push_back({p.value, p.residual, p.converged});
    keep("lanczos",
         {{"steps", result.steps},
          {"basis", result.basis},
          {"restarts", result.restarts},
          {"norm_estimate", result.norm_estimate},
          {"pairs", pairs}},
         &result.vectors, static_cast<int64_t>(result.pairs.size()));
    return result;
  }

  NonzeroSpectrum nonzero() {
    NonzeroSpectrum result;
    json record;
    if (restore("nonzero", record, &result.vectors)) {
      result.values = record["values"].get<std::vector<double>>();
      result.rank = record["rank"];
      result.sketch_columns = record["sketch_columns"];
      result.bound = record["bound"];
      result.norm = record["norm"];
      return result;
    }
    RangeFinderOptions ro;
    ro.tolerance = so_.tolerance;
    ro.max_columns = plan_.basis_columns;
    ro.seed = so_.seed;
    result = nonzero_spectrum(apply_, shard_, ro, r_.comm);
    keep("nonzero",
         {{"values", result.values},
          {"rank", result.rank},
          {"sketch_columns", result.sketch_columns},
          {"bound", result.bound},
          {"norm", result.norm}},
         &result.vectors, static_cast<int64_t>(result.values.size()));
    return result;
  }

  std::vector<QuadratureNode> slq() {
    std::vector<QuadratureNode> nodes;
    json record;
    if (restore("slq", record, nullptr)) {
      for (const auto& q : record["nodes"]) nodes.push_back({q[0].get<int>(), q[1].get<double>(), q[2].get<double>()});
      return nodes;
    }
    nodes = slq_nodes(apply_, shard_, so_.slq_probes, so_.slq_steps, plan_.slq_reorthogonalize, so_.seed, r_.comm);
    json list = json::array();
    for (const auto& q : nodes) list.push_back({q.probe, q.node, q.weight});
    keep("slq", {{"nodes", list}}, nullptr, 0);
    return nodes;
  }

  // The trace estimates asked for (Hutch++ by default), as summary.json's "trace"; the first is the
  // value unless the exact diagonal replaces it (summarize_diagonal).
  json trace() {
    json t;
    if (restore("trace", t, nullptr)) return summary_["trace"] = t;
    const TraceEstimator which = so_.trace_estimator;
    t = {{"exact", false}, {"products", 0}};
    if (which != TraceEstimator::hutchinson) add_estimate(t, "hutchpp", "Hutch++", hutchpp_trace);
    if (which != TraceEstimator::hutchpp) add_estimate(t, "hutchinson", "Hutchinson", hutchinson_trace);
    keep("trace", t, nullptr, 0);
    return summary_["trace"] = t;
  }

  void add_estimate(json& t, const std::string& key, const std::string& name,
                    TraceEstimate (*estimate)(const ShardedOperator&, const RowShard&, int64_t, int64_t, uint64_t,
                                              MPI_Comm)) {
    const TraceEstimate e = estimate(apply_, shard_, so_.trace_probes, plan_.trace_chunk, so_.seed, r_.comm);
    t[key] = e.value;
    t[key + "_stderr"] = e.stderr_value;
    t["products"] = t["products"].get<int64_t>() + e.products;
    if (t.contains("value")) return;
    t["value"] = e.value;
    t["stderr"] = e.stderr_value;
    t["method"] = name + " estimate from " + std::to_string(e.products) + " products";
  }

  DiagonalResult diagonal() {
    DiagonalResult d;
    const bool exact = exact_diagonal_wanted(so_, shard_.n);
    std::vector<double> both;
    json record;
    if (restore("diagonal", record, &both)) {
      d.values.assign(both.begin(), both.begin() + shard_.rows());
      if (!exact) d.stderr_values.assign(both.begin() + shard_.rows(), both.end());
      for (const auto& t : record.value("block_traces", json::array()))
        block_traces_.push_back({t[0].get<double>(), t[1].get<double>(), so_.diagonal_probes});
      return d;
    }
    if (exact) {
      d.values = exact_diagonal(apply_, shard_, std::max<int64_t>(1, std::min<int64_t>(plan_.product_columns, 64)));
    } else {
      const RowGroups groups = row_groups(blocks_, shard_);
      estimate_diagonal(apply_, shard_, so_.diagonal_probes, so_.seed, d.values, d.stderr_values, r_.comm,
                        blocks_.empty() ? nullptr : &groups, &block_traces_);
    }
    both = d.values;
    both.insert(both.end(), d.stderr_values.begin(), d.stderr_values.end());
    json traces = json::array();
    for (const auto& t : block_traces_) traces.push_back({t.value, t.stderr_value});
    keep("diagonal", {{"exact", exact}, {"block_traces", traces}}, &both, exact ? 1 : 2);
    return d;
  }

  // --blocks: each block's trace and largest eigenvalues (spectrum_blocks.cpp).
  std::vector<BlockCurvature> blocks() {
    json record;
    if (restore("blocks", record, nullptr)) return blocks_from(record);
    const LanczosOptions lo{o_.block_top, 0, so_.max_steps, so_.tolerance, so_.seed, {}};
    auto result = spectrum_block_curvature(apply_, shard_, blocks_, results_.diagonal, block_traces_, lo, r_.comm);
    keep("blocks", blocks_json(result, 0.0), nullptr, 0);
    return result;
  }

  std::vector<BlockCurvature> blocks_from(const json& record) const {
    std::vector<BlockCurvature> result;
    for (std::size_t b = 0; b < blocks_.size(); ++b) {
      const json& j = record[b];
      result.push_back({blocks_[b], j["trace"].get<double>(), j.value("trace_stderr", 0.0),
                        j["trace_exact"].get<bool>(), j["top"].get<std::vector<double>>(),
                        j["top_method"].get<std::string>()});
    }
    return result;
  }

  void summarize_phases() {
    if (so_.top + so_.bottom > 0) summarize_lanczos();
    if (so_.nonzero) summarize_nonzero();
    if (so_.slq_probes > 0) summarize_density();
    if (so_.diagonal != DiagonalMode::none) summarize_diagonal();
    if (!blocks_.empty()) summarize_blocks();
  }

  // The blocks partition the parameters: their traces sum to the whole.
  void summarize_blocks() {
    double total = 0;
    for (const auto& b : block_curvature_) total += b.trace;
    summary_["blocks"] = blocks_json(block_curvature_, total);
    blocks_text_ = blocks_table(block_curvature_, total);
  }

  void summarize_lanczos() {
    const LanczosResult& lanczos = lanczos_;
    json pairs = json::array();
    int64_t unconverged = 0;
    for (const auto& p : lanczos.pairs) {
      pairs.push_back({{"eigenvalue", p.value}, {"residual", p.residual}, {"converged", p.converged}});
      unconverged += p.converged ? 0 : 1;
    }
    summary_["lanczos"] = {{"steps", lanczos.steps},
                           {"basis", lanczos.basis},
                           {"restarts", lanczos.restarts},
                           {"pairs", pairs},
                           {"criterion", "||H z - lambda z||_2 <= tol * max|lambda|, H z from a fresh product"},
                           {"tolerance", so_.tolerance},
                           {"norm_estimate", lanczos.norm_estimate},
                           {"unconverged", unconverged}};
    if (unconverged > 0)
      warn(r_, std::to_string(unconverged) + " Ritz pair(s) did not reach the tolerance in " +
                   std::to_string(lanczos.steps) + " steps (raise --max-steps); see summary.json");
    std::vector<double> values;
    for (const auto& p : lanczos.pairs) values.push_back(p.value);
    if (!values.empty())
      summary_["eigenvalues"] = {{"values", values}, {"largest", values.back()}, {"smallest", values.front()}};
    results_.values = values;
    results_.vectors = lanczos.vectors;
  }

  // Every nonzero eigenvalue: the trace is their sum, the other n - count are zero within the bound.
  void summarize_nonzero() {
    const NonzeroSpectrum& s = nonzero_;
    const auto count = static_cast<int64_t>(s.values.size());
    const int64_t negative = std::count_if(s.values.begin(), s.values.end(), [](double v) { return v < 0; });
    summary_["nonzero"] = {
        {"rank", s.rank},
        {"nonzero_eigenvalues", count},
        {"zero_eigenvalues", shard_.n - count},
        {"zero_tolerance", so_.tolerance * s.norm},
        {"zero_tolerance_definition", "|lambda| <= tol * max|lambda| counts as zero"},
        {"sketch_products", s.sketch_columns},
        {"certificate",
         {{"bound", s.bound},
          {"relative", s.norm > 0 ? s.bound / s.norm : 0.0},
          {"probes", 16},
          {"definition",
           "||(I - QQ^T) H||_2 <= bound with probability >= 1 - 1e-16 (Halko, Martinsson, Tropp 2011, "
           "Lemma 4.1, from fresh Gaussian probes); every eigenvalue is within it of the reported "
           "one, the unreported ones of zero"}}}};
    summary_["eigenvalues"] = {
        {"count", count}, {"negative", negative}, {"positive", count - negative}, {"near_zero", shard_.n - count}};
    if (count > 0) {
      summary_["eigenvalues"]["largest"] = s.values.back();
      summary_["eigenvalues"]["smallest"] = s.values.front();
    }
    double sum = 0;
    for (double v : s.values) sum += v;
    summary_["trace"] = {{"value", sum},
                         {"exact", true},
                         {"stderr", 0.0},
                         {"bound", static_cast<double>(shard_.n) * s.bound},
                         {"method", "sum of the nonzero eigenvalues (certified range)"}};
    results_.values = s.values;
    results_.vectors = s.vectors;
    if (s.rank == shard_.n)
      warn(r_, "H has full rank (the certified range is all n = " + std::to_string(shard_.n) +
                   " directions): --nonzero found the whole spectrum, at more products than a dense run needs");
  }

  void summarize_density() {
    results_.density = smooth_density(results_.nodes, so_.slq_probes, 1000, so_.sigma);
    double trace_slq = 0;
    for (const auto& q : results_.nodes) trace_slq += q.weight * q.node;
    summary_["density"] = {
        {"probes", so_.slq_probes},
        {"steps", so_.slq_steps},
        {"reorthogonalized", plan_.slq_reorthogonalize},
        {"sigma", results_.density.sigma},
        {"normalization", "integrates to 1: density * n * d(lambda) counts eigenvalues"},
        {"trace_from_slq", trace_slq * static_cast<double>(shard_.n) / static_cast<double>(so_.slq_probes)}};
  }

  // With the exact diagonal at hand its sum is the trace; the estimates stay, labelled as such.
  void summarize_diagonal() {
    const bool exact = exact_diagonal_wanted(so_, shard_.n);
    summary_["diagonal"] = {
        {"mode", exact ? "exact" : "hutchinson"},
        {"probes", exact ? shard_.n : so_.diagonal_probes},
        {"per_parameter", diagonal_per_parameter(r_, results_.diagonal, shard_, l_.problem->layout())}};
    if (!exact) return;
    double local = 0;
    for (double d : results_.diagonal.values) local += d;
    summary_["trace"]["value"] = allsum_of(local);
    summary_["trace"]["exact"] = true;
    summary_["trace"]["method"] = "exact: sum of the exact diagonal";
    summary_["trace"]["stderr"] = 0.0;
  }

  double allsum_of(double v) const {
    MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_SUM, r_.comm);
    return v;
  }

  void write_summary(std::vector<std::string>& files) {
    const auto peaks = gather_doubles(r_, static_cast<double>(peak_rss_bytes()));
    const json torch_notes = report_torch_warnings(r_);
    summary_["method"] = "matrix-free (Lanczos, SLQ, Hutchinson)";
    summary_["dhess_version"] = DHESS_VERSION;
    summary_["libtorch"] = libtorch_build();
    summary_["command_line"] = o_.command_line;
    summary_["n"] = shard_.n;
    summary_["ranks"] = r_.size;
    summary_["out"] = o_.out;
    summary_["devices"] = gather_strings(r_, l_.device);
    summary_["threads_per_rank"] = l_.threads;
    summary_["model"] = model_summary(o_, l_);
    summary_["dtype"] = dtype_name(o_.problem.dtype);
    summary_["precision"] = precision_of(o_.problem.dtype);
    summary_["hvp_products"] = op_.products();
    // The start-up's measuring products of the phases' first vectors, which those phases took.
    summary_["startup_products"] = {{"kept", op_.kept()}, {"used", op_.reused()}};
    summary_["hvp"] = {{"mode", engine_.mode_description()}, {"unbatched_ops", torch_notes["unbatched_ops"]}};
    summary_["torch_warnings"] = torch_notes["other"];
    summary_["timings_seconds"] = timings_;
    summary_["memory"] = {{"peak_rss_per_rank", peaks},
                          {"peak_rss_max_human", human_bytes(*std::max_element(peaks.begin(), peaks.end()))},
                          {"plan_bytes_per_rank", plan_.total},
                          {"plan", plan_.to_json()}};
    files.push_back("summary.json");
    summary_["files"] = files;
    run_collectively(r_.comm, [&] {
      if (r_.root()) write_json(out_.staged("summary.json"), summary_);
    });
    out_.commit(files);
    say(r_, o_, closing_text(files));
  }

  std::string closing_text(const std::vector<std::string>& files) const {
    const Curvature curvature = o_.problem.curvature;
    const std::string product = curvature == Curvature::hessian ? "Hessian" : curvature_title(curvature);
    std::string text = "dhess spectrum: n = " + std::to_string(shard_.n) + ", " + std::to_string(op_.products()) + " " +
                       product + "-vector products, " + std::to_string(timings_["total"].get<double>()) + " s, peak " +
                       summary_["memory"]["peak_rss_max_human"].get<std::string>() + " per rank\n";
    if (!lanczos_.pairs.empty()) {
      text += "  extreme eigenvalues (" + std::to_string(lanczos_.steps) + " Lanczos steps" +
              (lanczos_.restarts > 0 ? ", " + std::to_string(lanczos_.restarts) + " restarts" : std::string()) + "):";
      for (const auto& p : lanczos_.pairs) text += " " + std::to_string(p.value);
      text += "\n";
    }
    if (so_.nonzero)
      text += "  every nonzero eigenvalue: " + std::to_string(nonzero_.values.size()) +
              " of n = " + std::to_string(shard_.n) + " (certified range of dimension " +
              std::to_string(nonzero_.rank) + " from " + std::to_string(nonzero_.sketch_columns) +
              " products; the others are zero within " + scientific(nonzero_.bound) + ")\n";
    if (summary_.contains("trace")) text += trace_line(summary_["trace"]);
    text += blocks_text_;
    text += "  results in " + o_.out + ":";
    for (const auto& f : files) text += " " + f;
    return text + "\n";
  }

  const RunOptions& o_;
  const SpectrumOptions& so_;
  const Rank& r_;
  Loaded& l_;
  HvpEngine& engine_;
  const RowShard shard_;
  const SpectrumPlan& plan_;
  OutputDir& out_;
  const Checkpoint* checkpoint_;
  DataParallelOperator op_;
  ShardedOperator apply_;
  SpectrumResults results_;
  LanczosResult lanczos_;
  NonzeroSpectrum nonzero_;
  const std::vector<ParameterBlock> blocks_;  // --blocks; empty without
  std::vector<TraceEstimate> block_traces_;   // from the Hutchinson diagonal's probes
  std::vector<BlockCurvature> block_curvature_;
  std::string blocks_text_;
  std::string phase_, finished_;  // the phase running, the phases done
  json summary_, timings_;
};

std::unique_ptr<Checkpoint> open_checkpoint(const RunOptions& o, const SpectrumOptions& so, const Rank& r,
                                            const Loaded& l) {
  if (o.checkpoint.empty()) return nullptr;
  const json settings = {{"method", "matrix-free"},
                         {"estimators",
                          {so.top, so.bottom, so.max_steps, so.tolerance, so.slq_probes, so.slq_steps, so.trace_probes,
                           static_cast<int>(so.diagonal), so.diagonal_probes, so.seed}}};
  return std::make_unique<Checkpoint>(o.checkpoint, problem_identity(o, r, l, settings), o.resume, r.comm);
}

}  // namespace

void run_spectrum(const RunOptions& o, const SpectrumOptions& so, MPI_Comm comm) {
  Rank r(comm);
  const double start = MPI_Wtime();
  Loaded l = load(o, r, r.size);
  Problem& problem = *l.problem;
  run_collectively(comm, [&] { problem.require_separable(r.size); });
  const int64_t n = problem.layout().n();
  // Row shards travel in MPI's int counts and displacements (Open MPI 4.1 has no large-count calls).
  if (n > std::numeric_limits<int>::max())
    run_collectively(comm, [&] {
      throw ResourceError("n = " + std::to_string(n) +
                          ": dhess spectrum takes n < 2^31, since its row shards go through MPI's 32-bit counts "
                          "and displacements; select fewer parameters with --params");
    });
  if (so.top + so.bottom > n)
    run_collectively(comm, [&] {
      throw UsageError("--top " + std::to_string(so.top) + " plus --bottom " + std::to_string(so.bottom) +
                       " exceed n = " + std::to_string(n));
    });
  if (so.lanczos_basis > 0 && so.lanczos_basis < std::min(so.top + so.bottom + 2, n))
    run_collectively(comm, [&] {
      throw UsageError("--lanczos-basis " + std::to_string(so.lanczos_basis) +
                       " leaves no room to restart beside the --top and --bottom pairs: give at least " +
                       std::to_string(so.top + so.bottom + 2));
    });
  std::unique_ptr<HvpEngine> engine;
  run_collectively(comm, [&] {
    engine = std::make_unique<HvpEngine>(problem, HvpOptions{o.panel, o.hvp_mode, o.compiled});
  });
  const RowShard shard = RowShard::of(n, r.rank, r.size);
  const MemoryBudget budget = memory_per_rank(o, l.place.local_size, comm);
  StartupProducts startup = first_vectors(so, n, budget.bytes);
  const SpectrumPlan plan =
      plan_spectrum(so, shard, *engine, o.problem.dtype, o.panel > 0 ? o.panel : 64, budget, comm, &startup);
  // The ranks keep as many as the one that kept fewest (it made no product of the batch of four).
  MPI_Allreduce(MPI_IN_PLACE, &startup.made, 1, MPI_INT64_T, MPI_MIN, comm);
  if (plan.total > plan.available)
    run_collectively(comm, [&] { throw ResourceError(spectrum_refusal(plan, o.problem.dtype)); });
  if (!plan.slq_reorthogonalize && so.slq_probes > 0)
    warn(r, "SLQ runs without reorthogonalization to fit memory (more ranks restore it)");
  if (so.top + so.bottom > 0 && plan.lanczos_basis < std::min(so.max_steps, n))
    say(r, o,
        "Lanczos holds " + std::to_string(plan.lanczos_basis) + " vectors and restarts when they are full (" +
            (so.lanczos_basis > 0 ? std::string("--lanczos-basis")
                                  : "all " + std::to_string(so.max_steps) + " steps' vectors do not fit memory") +
            ")\n");
  OutputDir out(o.out, o.force, comm);
  const std::unique_ptr<Checkpoint> checkpoint = open_checkpoint(o, so, r, l);
  say(r, o,
      "dhess spectrum: " + problem.description() + "\n  n = " + std::to_string(n) + " parameters, " +
          std::to_string(r.size) + " rank(s) (data-parallel: " + std::to_string(problem.num_samples()) +
          " samples sharded), " + std::to_string(l.threads) + " thread(s)/rank, device " + l.device +
          ", vectors sharded by rows (" + std::to_string(shard.rows()) + " on this rank), plan " +
          human_bytes(plan.total) + "/rank\n");
  SpectrumRun(o, so, r, l, *engine, plan, std::move(startup), out, checkpoint.get()).run(start);
}

}  // namespace dhess
