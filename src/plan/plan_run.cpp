#include "dhess/plan/plan_run.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "dhess/core/collective.hpp"
#include "dhess/core/layout.hpp"
#include "dhess/core/memory.hpp"
#include "dhess/linalg/solver_timing.hpp"
#include "dhess/run/feasibility.hpp"

namespace dhess {
namespace {

using json = nlohmann::json;

// The parameters whose columns are timed, in order: the first (the columns that differentiate
// through the whole graph: the costliest, and the rate taken where none is timed before), then by
// decreasing size, so that what is timed covers most of H.
std::vector<std::size_t> timing_order(const ParameterLayout& layout) {
  const auto& params = layout.parameters();
  std::vector<std::size_t> order(params.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin() + 1, order.end(),
                   [&](std::size_t a, std::size_t b) { return params[a].size > params[b].size; });
  return order;
}

// Hessian columns per second on one rank. A column costs what differentiating from its parameter
// on costs (HvpEngine::columns), more for the earlier layers: panels from the first column of each
// parameter in timing_order() are timed in turn, for half a second (one small panel's time varied
// by 50% between runs) or four rounds, after a first panel that builds the graph and checks the
// batched path; a parameter not timed takes the rate of the nearest one timed before it. The
// slowest rank's rate.
double hvp_rate(const RunOptions& o, const Rank& r, DenseSetup& s) {
  const int64_t k = std::min<int64_t>(s.n, std::max<int64_t>(s.engine->panel_width(), 8));
  const auto& params = s.loaded.problem->layout().parameters();
  double rate = 0;
  run_collectively(r.comm, [&] {
    std::vector<double> panel(static_cast<std::size_t>(s.n * k));
    std::vector<float> panel32(o.problem.dtype == Dtype::float32 ? panel.size() : 0);
    auto seconds_of = [&](int64_t j0) {
      const double t = MPI_Wtime();
      if (o.problem.dtype == Dtype::float64)
        s.engine->columns(j0, j0 + k, panel.data());
      else
        s.engine->columns(j0, j0 + k, panel32.data());
      return MPI_Wtime() - t;
    };
    seconds_of(0);
    std::vector<double> spent(params.size(), 0), panels(params.size(), 0);
    const double start = MPI_Wtime();
    const auto order = timing_order(s.loaded.problem->layout());
    const std::size_t most = std::max<std::size_t>(2, 4 * order.size());  // each parameter up to 4 times
    for (std::size_t t = 0; t < most && (t < 2 || MPI_Wtime() - start < 0.5); ++t) {
      const std::size_t p = order[t % order.size()];
      spent[p] += seconds_of(std::min(params[p].offset, s.n - k));
      panels[p] += 1;
    }
    double seconds = 0, last = spent[0] / std::max(panels[0], 1.0);
    for (std::size_t p = 0; p < params.size(); ++p) {
      if (panels[p] > 0) last = spent[p] / panels[p];
      seconds += last / static_cast<double>(k) * static_cast<double>(params[p].size);
    }
    rate = static_cast<double>(s.n) / std::max(seconds, 1e-9);
  });
  MPI_Allreduce(MPI_IN_PLACE, &rate, 1, MPI_DOUBLE, MPI_MIN, r.comm);
  return rate;
}

struct HvpEstimate {
  double rate = 0, seconds = 0;
  std::string basis;
};

// Ranks on one node share its memory bus and last-level cache: timed alone, a rank is faster than
// it will be beside the others (1 -> 2 ranks gave 1.68x, 84% per rank, on the 2-core machine of
// bench/RESULTS.md). Timed under mpirun with the ranks of the run, the sharing is in the timing.
HvpEstimate estimate_hvp(const RunOptions& o, const Rank& r, DenseSetup& s, int ranks, int per_node) {
  HvpEstimate e;
  e.rate = hvp_rate(o, r, s);
  const bool alone = s.loaded.place.local_size < per_node;
  e.seconds = static_cast<double>(s.n) / (e.rate * ranks * (alone ? 0.85 : 1.0));
  e.basis = std::to_string(r.size) + " process(es) timed " +
            (alone ? "alone; 85% per rank assumed for " + std::to_string(per_node) + " ranks sharing a node"
                   : "side by side as in the run");
  return e;
}

// How the rank-revealing sketch decides; the eigensolver estimate is the other solver's, which
// answers whenever the sketch does not.
std::string lowrank_text(const RunOptions& o, const DenseSetup& s) {
  const std::string bound = std::to_string(s.sketch_columns);
  const std::string full = solver_name(s.solver == Solver::lowrank ? Solver::pdsyevr : s.solver);
  const std::string limit =
      o.solver == Solver::automatic
          ? " and, under --solver auto, while a larger sketch would stay within " +
                std::to_string(static_cast<int>(100 * kLowrankRegret)) + "% of " + full +
                "'s time (estimated at the run's start by timing it for two seconds): the worst case, an H of "
                "larger rank, costs " +
                full + "'s time plus that share"
          : "";
  return "the eigensolver first sketches H's range with Hessian-vector products on Gaussian vectors and on "
         "the basis vectors whose products it lacks (split over the ranks as H's columns are), doubling from 64, "
         "up to " +
         bound + " vectors (what memory holds)" + limit +
         ". Where H's rank is within reach and the eigenpairs asked for are nonzero, it answers exactly (the "
         "other eigenvalues zero within a certified bound) in the time of about 1.5 rank + 100 columns of H and an "
         "orthonormalization of about 6 n x rank^2 flops (4 times that where the sketch overshoots to twice the "
         "rank); otherwise " +
         full + " answers after it; the eigensolver estimate is " + full + "'s";
}

// What `dhess compile` spent on --compiled's packages (its compile.json), paid once before the
// runs that use them: the plan's product rate is then the compiled one. -1 where it is not known.
double compile_seconds(const RunOptions& o) {
  if (o.compiled.empty()) return -1;
  const std::filesystem::path dir(o.compiled);
  std::ifstream in(std::filesystem::is_directory(dir) ? dir / "compile.json" : dir.parent_path() / "compile.json");
  const json record = json::parse(in, nullptr, false);
  if (!record.is_object() || !record.contains("packages")) return -1;
  double seconds = 0;
  for (const auto& package : record["packages"])
    for (const auto& method : package["methods"]) seconds += method.value("compile_seconds", 0.0);
  return seconds;
}

std::string compiled_text(const RunOptions& o, const DenseSetup& s) {
  if (o.compiled.empty()) return "";
  const double seconds = compile_seconds(o);
  char text[160] = "";
  if (seconds >= 0) std::snprintf(text, sizeof text, "; compiling took %.1f s, once (compile.json)", seconds);
  return "  products: " + s.engine->mode_description() + text + "\n";
}

json plan_json(const RunOptions& o, const DenseSetup& s, int ranks, const HvpEstimate& hvp, const SolverTiming& eig) {
  json plan = {
      {"n", s.n},
      {"ranks", ranks},
      {"grid", {s.rows, s.cols}},
      {"block", s.block},
      {"dtype", dtype_name(o.problem.dtype)},
      {"eigen", s.request.text()},
      {"solver", solver_name(s.solver)},
      {"memory_bytes_per_rank", s.plan.to_json()},
      {"hvp_count", s.n},
      {"hvp_columns_per_second_per_rank", hvp.rate},
      {"estimated_seconds", {{"hvp", hvp.seconds}, {"eigensolver", eig.seconds}, {"total", hvp.seconds + eig.seconds}}},
      {"hvp_estimate_basis", hvp.basis},
      {"eigensolver_estimate_basis", eig.basis},
      {"eigensolver_estimate_is_upper_bound", eig.upper_bound},
      {"fits", fits(s)}};
  if (!o.compiled.empty())
    plan["compiled"] = {{"mode", s.engine->mode_description()}, {"compile_seconds", compile_seconds(o)}};
  if (!s.limit.empty()) plan["limit"] = s.limit;
  if (!s.solver_note.empty()) plan["solver_note"] = s.solver_note;
  if (s.sketch_columns > 0) plan["lowrank_sketch_bound"] = s.sketch_columns;
  if (s.sketch_columns > 0) plan["lowrank_note"] = lowrank_text(o, s);
  if (!fits(s)) plan["suggested_ranks"] = ranks_that_fit(o, s, ranks);
  return plan;
}

// "1234.5 s", and past two hours also in hours, days or years: a plan may say "not in this life".
std::string duration(double seconds) {
  char text[64];
  const double hour = 3600, day = 24 * hour, year = 365.25 * day;
  if (seconds < 2 * hour)
    std::snprintf(text, sizeof text, "%.1f s", seconds);
  else if (seconds < 2 * day)
    std::snprintf(text, sizeof text, "%.0f s (%.1f hours)", seconds, seconds / hour);
  else if (seconds < 2 * year)
    std::snprintf(text, sizeof text, "%.0f s (%.1f days)", seconds, seconds / day);
  else
    std::snprintf(text, sizeof text, "%.3g s (%.3g years)", seconds, seconds / year);
  return text;
}

std::string plan_text(const RunOptions& o, const DenseSetup& s, int ranks, const HvpEstimate& hvp,
                      const SolverTiming& eig) {
  const MemoryPlan& m = s.plan;
  const char* about = eig.upper_bound ? "at most about" : "about";
  char text[2048];
  std::snprintf(text, sizeof text,
                "dhess plan: %s\n"
                "  n = %lld parameters, %d rank(s) on a %dx%d grid, block %d, %s, --eigen %s\n"
                "  memory per rank: H share %s + eigenvectors %s + solver workspace %s + panel %s + process %s"
                " = %s; available %s per rank (%s): %s\n"
                "  Hessian-vector products: %lld columns at %.1f columns/s per rank -> %s (%s)\n"
                "  eigensolver (%s): %s %s (%s); total %s %s\n",
                s.loaded.problem->description().c_str(), static_cast<long long>(s.n), ranks, s.rows, s.cols, s.block,
                dtype_name(o.problem.dtype), s.request.text().c_str(), human_bytes(m.h).c_str(),
                human_bytes(m.z).c_str(), human_bytes(m.workspace).c_str(), human_bytes(m.panel).c_str(),
                human_bytes(m.baseline).c_str(), human_bytes(m.total).c_str(), human_bytes(m.available).c_str(),
                m.available_source.c_str(), m.total <= m.available ? "fits" : "DOES NOT FIT",
                static_cast<long long>(s.n), hvp.rate, duration(hvp.seconds).c_str(), hvp.basis.c_str(),
                solver_name(s.solver), about, duration(eig.seconds).c_str(), eig.basis.c_str(), about,
                duration(hvp.seconds + eig.seconds).c_str());
  std::string out = text + compiled_text(o, s);
  if (s.sketch_columns > 0) out += "  lowrank: " + lowrank_text(o, s) + "\n";
  if (!s.solver_note.empty()) out += "  " + s.solver_note + "\n";
  if (!fits(s)) out += "  DOES NOT FIT: " + refusal(o, s, ranks) + "\n";
  return out;
}

}  // namespace

void run_plan(const RunOptions& o, int planned_ranks, bool as_json, MPI_Comm comm) {
  Rank r(comm);
  const int ranks = planned_ranks > 0 ? planned_ranks : r.size;
  // The plan for `ranks` ranks; the node's memory is shared by the ranks placed on it.
  const NodePlacement place = node_placement(comm, process_env());
  const int per_node =
      planned_ranks > 0 ? std::max(1, std::min(ranks, place.local_size * ranks / r.size)) : place.local_size;
  DenseSetup s = prepare_dense(o, r, ranks, per_node);
  const HvpEstimate hvp = estimate_hvp(o, r, s, ranks, per_node);
  const SolverTiming eig =
      s.request.kind == EigenRequest::Kind::none
          ? SolverTiming{}
          : time_solver(s.solver, s.request, s.n, s.block, o.problem.dtype, ranks, s.plan.available, comm);
  say(r, o, as_json ? plan_json(o, s, ranks, hvp, eig).dump(2) + "\n" : plan_text(o, s, ranks, hvp, eig));
}

}  // namespace dhess
