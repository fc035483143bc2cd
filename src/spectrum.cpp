// dhess spectrum: the matrix-free path. Every rank holds the model and a shard
// of the data; H·v is the sum of the shards' products (one reduce-scatter), and
// all vectors are sharded by rows, so neither n² nor n·steps lives on one rank.
#include <algorithm>
#include <cmath>
#include <fstream>

#include "dhess/checkpoint.hpp"
#include "dhess/collective.hpp"
#include "dhess/errors.hpp"
#include "dhess/hvp.hpp"
#include "dhess/interrupt.hpp"
#include "dhess/io/hdf5_matrix.hpp"
#include "dhess/io/npy.hpp"
#include "dhess/io/output_dir.hpp"
#include "dhess/matrix_free.hpp"
#include "dhess/memory.hpp"
#include "dhess/summary.hpp"
#include "pipeline_support.hpp"

namespace dhess {
using namespace detail;
namespace {

// H·X for row-sharded X: gather each vector, apply this rank's data-shard
// Hessian, and reduce-scatter the sum back into row shards.
class DataParallelOperator {
 public:
  DataParallelOperator(HvpEngine& engine, const RowShard& shard, MPI_Comm comm, int64_t max_columns)
      : engine_(engine), shard_(shard), comm_(comm), max_columns_(std::max<int64_t>(1, max_columns)) {
    int size = 1;
    MPI_Comm_size(comm, &size);
    for (int p = 0; p < size; ++p) {
      RowShard s = RowShard::of(shard.n, p, size);
      counts_.push_back(static_cast<int>(s.rows()));
      displs_.push_back(static_cast<int>(s.begin));
    }
  }

  void operator()(const double* x, int64_t k, double* y) {
    const int64_t n = shard_.n, rows = shard_.rows();
    for (int64_t c0 = 0; c0 < k; c0 += max_columns_) {
      const int64_t kk = std::min(max_columns_, k - c0);
      full_x_.resize(static_cast<std::size_t>(n * kk));
      full_y_.resize(full_x_.size());
      for (int64_t c = 0; c < kk; ++c)
        check_mpi(MPI_Allgatherv(x + (c0 + c) * rows, static_cast<int>(rows), MPI_DOUBLE, full_x_.data() + c * n,
                                 counts_.data(), displs_.data(), MPI_DOUBLE, comm_),
                  "MPI_Allgatherv");
      run_collectively(comm_, [&] { engine_.apply(full_x_.data(), kk, full_y_.data()); });
      for (int64_t c = 0; c < kk; ++c)
        check_mpi(MPI_Reduce_scatter(full_y_.data() + c * n, y + (c0 + c) * rows, counts_.data(), MPI_DOUBLE, MPI_SUM,
                                     comm_),
                  "MPI_Reduce_scatter");
      products_ += kk;
    }
  }
  int64_t products() const { return products_; }

 private:
  HvpEngine& engine_;
  RowShard shard_;
  MPI_Comm comm_;
  int64_t max_columns_;
  std::vector<int> counts_, displs_;
  std::vector<double> full_x_, full_y_;
  int64_t products_ = 0;
};

// Exact diagonal from H e_j in panels of unit vectors (n products).
std::vector<double> exact_diagonal(DataParallelOperator& op, const RowShard& shard, int64_t panel) {
  const int64_t rows = shard.rows();
  std::vector<double> diag(static_cast<std::size_t>(rows), 0.0);
  for (int64_t j0 = 0; j0 < shard.n; j0 += panel) {
    const int64_t k = std::min(panel, shard.n - j0);
    std::vector<double> x(static_cast<std::size_t>(rows * k), 0.0), y(x.size());
    for (int64_t c = 0; c < k; ++c)
      if (j0 + c >= shard.begin && j0 + c < shard.end) x[c * rows + (j0 + c - shard.begin)] = 1.0;
    op(x.data(), k, y.data());
    for (int64_t c = 0; c < k; ++c)
      if (j0 + c >= shard.begin && j0 + c < shard.end) diag[j0 + c - shard.begin] = y[c * rows + (j0 + c - shard.begin)];
  }
  return diag;
}

std::vector<double> gather_to_root(const std::vector<double>& mine, const RowShard& shard, MPI_Comm comm) {
  int size = 1, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  std::vector<int> counts, displs;
  for (int p = 0; p < size; ++p) {
    RowShard s = RowShard::of(shard.n, p, size);
    counts.push_back(static_cast<int>(s.rows()));
    displs.push_back(static_cast<int>(s.begin));
  }
  std::vector<double> all(rank == 0 ? static_cast<std::size_t>(shard.n) : 0);
  check_mpi(MPI_Gatherv(mine.data(), static_cast<int>(mine.size()), MPI_DOUBLE, all.data(), counts.data(),
                        displs.data(), MPI_DOUBLE, 0, comm),
            "MPI_Gatherv");
  return all;
}

// Columns of row-sharded vectors (rows × k, column-major) to and from rank 0 (n × k).
struct ShardLayout {
  std::vector<int> counts, displs;
  ShardLayout(int64_t n, MPI_Comm comm) {
    int size = 1;
    MPI_Comm_size(comm, &size);
    for (int p = 0; p < size; ++p) {
      RowShard s = RowShard::of(n, p, size);
      counts.push_back(static_cast<int>(s.rows()));
      displs.push_back(static_cast<int>(s.begin));
    }
  }
};

std::vector<double> gather_columns_to_root(const std::vector<double>& local, const RowShard& shard, int64_t k,
                                           MPI_Comm comm) {
  ShardLayout l(shard.n, comm);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  std::vector<double> all(rank == 0 ? static_cast<std::size_t>(shard.n * k) : 0);
  for (int64_t c = 0; c < k; ++c)
    check_mpi(MPI_Gatherv(local.data() + c * shard.rows(), static_cast<int>(shard.rows()), MPI_DOUBLE,
                          rank == 0 ? all.data() + c * shard.n : nullptr, l.counts.data(), l.displs.data(), MPI_DOUBLE,
                          0, comm),
              "MPI_Gatherv");
  return all;
}

std::vector<double> scatter_columns_from_root(const std::vector<double>& all, const RowShard& shard, int64_t k,
                                              MPI_Comm comm) {
  ShardLayout l(shard.n, comm);
  std::vector<double> local(static_cast<std::size_t>(shard.rows() * k));
  for (int64_t c = 0; c < k; ++c)
    check_mpi(MPI_Scatterv(all.empty() ? nullptr : all.data() + c * shard.n, l.counts.data(), l.displs.data(),
                           MPI_DOUBLE, local.data() + c * shard.rows(), static_cast<int>(shard.rows()), MPI_DOUBLE, 0,
                           comm),
              "MPI_Scatterv");
  return local;
}

// "trace: -40.8 (exact: sum of the exact diagonal); estimates: Hutch++ ..." or "trace: about ... +- ...".
std::string trace_line(const json& t) {
  auto number = [](const json& v) { return std::to_string(v.get<double>()); };
  std::string estimates;
  if (t.contains("hutchpp"))
    estimates = "Hutch++ " + number(t["hutchpp"]) + " +- " + number(t["hutchpp_stderr"]) + ", Hutchinson " +
                number(t["hutchinson"]) + " +- " + number(t["hutchinson_stderr"]);
  if (t["exact"].get<bool>())
    return "  trace: " + number(t["value"]) + " (" + t["method"].get<std::string>() + ")" +
           (estimates.empty() ? "" : "; estimates: " + estimates) + "\n";
  return "  trace: about " + number(t["value"]) + " +- " + number(t["stderr"]) + " (" +
         t["method"].get<std::string>() + "; " + estimates + ")\n";
}

}  // namespace

void run_spectrum(const RunOptions& o, const SpectrumOptions& so, MPI_Comm comm) {
  Rank r(comm);
  const double t_start = MPI_Wtime();
  if (o.problem.dtype != Dtype::float64)
    run_collectively(comm, [] { throw UsageError("dhess spectrum works in float64 (--dtype float32 is for the dense path)"); });
  if (so.top < 0 || so.bottom < 0 || so.max_steps < 1 || so.tolerance <= 0 || so.slq_probes < 0 ||
      so.slq_steps < 1 || so.trace_probes < 0 || so.diagonal_probes < 1 || so.sigma <= 0)
    run_collectively(comm, [] { throw UsageError("spectrum options must be positive (--top, --bottom, --max-steps, --tol, ...)"); });
  if (so.diagonal != "none" && so.diagonal != "exact" && so.diagonal != "hutchinson" && so.diagonal != "auto")
    run_collectively(comm, [&] {
      throw UsageError("--diagonal '" + so.diagonal + "' is not one of none, exact, hutchinson, auto");
    });
  Loaded l = load(o, r);
  Problem& problem = *l.problem;
  run_collectively(comm, [&] { problem.require_separable(r.size); });
  problem.keep_shard(r.rank, r.size);
  const int64_t n = problem.layout().n();
  if (so.top + so.bottom > n)
    run_collectively(comm, [&] {
      throw UsageError("--top " + std::to_string(so.top) + " plus --bottom " + std::to_string(so.bottom) +
                       " exceed n = " + std::to_string(n));
    });
  HvpOptions hvp;
  hvp.panel = o.panel;
  std::unique_ptr<HvpEngine> engine;
  run_collectively(comm, [&] {
    hvp.mode = parse_hvp_mode(o.hvp_mode);
    engine = std::make_unique<HvpEngine>(problem, hvp);
  });
  const RowShard shard = RowShard::of(n, r.rank, r.size);

  // Memory per rank: the Lanczos basis and Ritz vectors (sharded), the SLQ bases,
  // and two full n-vectors per column of a product.
  const double row_bytes = 8.0 * static_cast<double>(shard.rows());
  const int64_t steps = std::min(so.max_steps, n);
  const double lanczos_bytes = row_bytes * static_cast<double>(steps + 1 + so.top + so.bottom);
  const double local_available = o.mem_per_rank > 0 ? o.mem_per_rank
                                              : static_cast<double>(available_memory_bytes()) /
                                                    std::max(1, node_placement(comm, process_env()).local_size);
  double baseline = static_cast<double>(current_rss_bytes()), available = local_available;
  // Ranks must agree on every choice derived from memory (chunking, reorthogonalization).
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &baseline, 1, MPI_DOUBLE, MPI_MAX, comm), "MPI_Allreduce");
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &available, 1, MPI_DOUBLE, MPI_MIN, comm), "MPI_Allreduce");
  const int64_t product_columns =
      std::max<int64_t>(1, std::min<int64_t>(engine->panel_width(), static_cast<int64_t>(0.1 * available / (16.0 * n))));
  const double product_bytes = 16.0 * static_cast<double>(n) * static_cast<double>(product_columns);
  double slq_bytes = row_bytes * static_cast<double>(so.slq_probes * std::min(so.slq_steps, n));
  const bool slq_reorth = baseline + lanczos_bytes + product_bytes + slq_bytes <= 0.8 * available;
  if (!slq_reorth) slq_bytes = row_bytes * static_cast<double>(2 * so.slq_probes);
  const double planned = baseline + std::max(lanczos_bytes, slq_bytes) + product_bytes;
  if (planned > available)
    run_collectively(comm, [&] {
      throw ResourceError("the matrix-free run needs " + human_bytes(planned) + " per rank (Lanczos basis " +
                          human_bytes(lanczos_bytes) + " for " + std::to_string(steps) + " steps, products " +
                          human_bytes(product_bytes) + ", process " + human_bytes(baseline) + ") but " +
                          human_bytes(available) + " is available; use more ranks or a smaller --max-steps");
    });
  if (!slq_reorth && so.slq_probes > 0)
    warn(r, "SLQ runs without reorthogonalization to fit memory (more ranks restore it)");
  OutputDir out(o.out, o.force, comm);

  // Each finished phase is kept; a signal stops the run between phases (exit 75).
  std::unique_ptr<Checkpoint> checkpoint;
  if (!o.checkpoint.empty()) {
    json params = json::array();
    for (const auto& info : problem.layout().parameters()) params.push_back({info.name, info.shape, info.aliases});
    const bool builtin = o.problem.model.rfind("builtin:", 0) == 0;
    json identity = {{"method", "matrix-free"},
                     {"model", builtin ? o.problem.model : file_hash(o.problem.model)},
                     {"data", o.problem.data.empty() ? std::string() : file_hash(o.problem.data)},
                     {"loss", problem.loss_name()},
                     {"n", n},
                     {"parameters", params},
                     {"train_mode", o.problem.train_mode},
                     {"settings", {so.top, so.bottom, so.max_steps, so.tolerance, so.slq_probes, so.slq_steps,
                                   so.trace_probes, so.diagonal, so.diagonal_probes, so.seed}}};
    checkpoint = std::make_unique<Checkpoint>(o.checkpoint, identity, o.resume, comm);
  }
  auto phase_done = [&](const char* phase) {
    if (!stop_requested(comm)) return;
    Interrupted stop(std::string("stopped by a signal after the ") + phase + " phase; " +
                     (checkpoint ? "finished phases are in checkpoint '" + checkpoint->dir() +
                                       "': rerun the same command with --resume"
                                 : std::string("no --checkpoint was given, so nothing was kept")));
    stop.mark_agreed();  // every rank saw the same allreduced flag
    throw stop;
  };

  say(r, o,
      "dhess spectrum: " + problem.description() + "\n  n = " + std::to_string(n) + " parameters, " +
          std::to_string(r.size) + " rank(s) (data-parallel: " + std::to_string(problem.num_samples()) +
          " samples sharded), " + std::to_string(l.threads) + " thread(s)/rank, device " + l.device +
          ", vectors sharded by rows (" + std::to_string(shard.rows()) + " on this rank), plan " +
          human_bytes(planned) + "/rank\n");

  DataParallelOperator op(*engine, shard, comm, product_columns);
  ShardedOperator apply = [&](const double* x, int64_t k, double* y) { op(x, k, y); };
  json summary, timings;
  std::vector<std::string> files;

  // Extreme eigenpairs.
  LanczosResult lanczos;
  if (so.top + so.bottom > 0) {
    double t = MPI_Wtime();
    LanczosOptions lo;
    lo.top = so.top;
    lo.bottom = so.bottom;
    lo.max_steps = so.max_steps;
    lo.tolerance = so.tolerance;
    lo.seed = so.seed;
    json record;
    if (checkpoint && checkpoint->load_record("lanczos", record)) {
      lanczos.steps = record["steps"];
      lanczos.norm_estimate = record["norm_estimate"];
      for (const auto& p : record["pairs"]) lanczos.pairs.push_back({p[0], p[1], p[2]});
      const int64_t k = static_cast<int64_t>(lanczos.pairs.size());
      std::vector<double> all(r.root() ? static_cast<std::size_t>(n * k) : 0);
      if (!checkpoint->load_array("lanczos_vectors", n, k, all.data()))
        run_collectively(comm, [&] { throw InputError("checkpoint '" + o.checkpoint + "' lacks lanczos_vectors.panel"); });
      lanczos.vectors = scatter_columns_from_root(all, shard, k, comm);
    } else {
      lanczos = lanczos_extremes(apply, shard, lo, comm);
      if (checkpoint) {
        const int64_t k = static_cast<int64_t>(lanczos.pairs.size());
        checkpoint->save_array("lanczos_vectors", n, k, gather_columns_to_root(lanczos.vectors, shard, k, comm).data());
        json pairs = json::array();
        for (const auto& p : lanczos.pairs) pairs.push_back({p.value, p.residual, p.converged});
        checkpoint->save_record("lanczos", {{"steps", lanczos.steps}, {"norm_estimate", lanczos.norm_estimate},
                                            {"pairs", pairs}});
      }
    }
    timings["lanczos"] = MPI_Wtime() - t;
    phase_done("Lanczos");
    json pairs = json::array();
    int64_t unconverged = 0;
    for (const auto& p : lanczos.pairs) {
      pairs.push_back({{"eigenvalue", p.value}, {"residual", p.residual}, {"converged", p.converged}});
      unconverged += p.converged ? 0 : 1;
    }
    summary["lanczos"] = {{"steps", lanczos.steps},
                          {"pairs", pairs},
                          {"criterion", "||H z - lambda z||_2 <= tol * max|lambda|, H z from a fresh product"},
                          {"tolerance", so.tolerance},
                          {"norm_estimate", lanczos.norm_estimate},
                          {"unconverged", unconverged}};
    if (unconverged > 0)
      warn(r, std::to_string(unconverged) + " Ritz pair(s) did not reach the tolerance in " +
                  std::to_string(lanczos.steps) + " steps (raise --max-steps); see summary.json");
  }

  // Spectral density.
  std::vector<QuadratureNode> nodes;
  Density density;
  if (so.slq_probes > 0) {
    double t = MPI_Wtime();
    json record;
    if (checkpoint && checkpoint->load_record("slq", record)) {
      for (const auto& q : record["nodes"]) nodes.push_back({q[0].get<int>(), q[1].get<double>(), q[2].get<double>()});
    } else {
      nodes = slq_nodes(apply, shard, so.slq_probes, so.slq_steps, slq_reorth, so.seed, comm);
      if (checkpoint) {
        json list = json::array();
        for (const auto& q : nodes) list.push_back({q.probe, q.node, q.weight});
        checkpoint->save_record("slq", {{"nodes", list}});
      }
    }
    density = smooth_density(nodes, so.slq_probes, 1000, so.sigma);
    timings["slq"] = MPI_Wtime() - t;
    double trace_slq = 0;
    for (const auto& q : nodes) trace_slq += q.weight * q.node;
    summary["density"] = {{"probes", so.slq_probes},
                          {"steps", so.slq_steps},
                          {"reorthogonalized", slq_reorth},
                          {"sigma", density.sigma},
                          {"normalization", "integrates to 1: density * n * d(lambda) counts eigenvalues"},
                          {"trace_from_slq", trace_slq * static_cast<double>(n) / static_cast<double>(so.slq_probes)}};
    phase_done("density");
  }

  // Trace.
  if (so.trace_probes > 0) {
    double t = MPI_Wtime();
    TraceEstimate te;
    json record;
    if (checkpoint && checkpoint->load_record("trace", record)) {
      te = {record[0], record[1], record[2], record[3], record[4]};
    } else {
      te = estimate_trace(apply, shard, so.trace_probes, so.seed, comm);
      if (checkpoint)
        checkpoint->save_record("trace", {te.hutchinson, te.hutchinson_stderr, te.hutchpp, te.hutchpp_stderr, te.probes});
    }
    timings["trace"] = MPI_Wtime() - t;
    summary["trace"] = {{"value", te.hutchpp},
                        {"exact", false},
                        {"method", "Hutch++ estimate from " + std::to_string(te.probes) + " products"},
                        {"stderr", te.hutchpp_stderr},
                        {"hutchinson", te.hutchinson},
                        {"hutchinson_stderr", te.hutchinson_stderr},
                        {"hutchpp", te.hutchpp},
                        {"hutchpp_stderr", te.hutchpp_stderr},
                        {"products", te.probes}};
    phase_done("trace");
  }

  // Diagonal.
  std::vector<double> diagonal, diagonal_err;
  std::string diagonal_mode = so.diagonal == "auto" ? (n <= 20000 ? "exact" : "hutchinson") : so.diagonal;
  if (diagonal_mode != "none") {
    double t = MPI_Wtime();
    const int64_t k = diagonal_mode == "exact" ? 1 : 2;
    std::vector<double> all(r.root() ? static_cast<std::size_t>(n * k) : 0);
    if (checkpoint && checkpoint->load_array("diagonal", n, k, all.data())) {
      std::vector<double> both = scatter_columns_from_root(all, shard, k, comm);
      diagonal.assign(both.begin(), both.begin() + shard.rows());
      if (k == 2) diagonal_err.assign(both.begin() + shard.rows(), both.end());
    } else {
      if (diagonal_mode == "exact")
        diagonal = exact_diagonal(op, shard, std::max<int64_t>(1, std::min<int64_t>(engine->panel_width(), 64)));
      else
        estimate_diagonal(apply, shard, so.diagonal_probes, so.seed, diagonal, diagonal_err, comm);
      if (checkpoint) {
        std::vector<double> both = diagonal;
        both.insert(both.end(), diagonal_err.begin(), diagonal_err.end());
        checkpoint->save_array("diagonal", n, k, gather_columns_to_root(both, shard, k, comm).data());
      }
    }
    timings["diagonal"] = MPI_Wtime() - t;
  }

  // Outputs.
  double t_io = MPI_Wtime();
  const ParameterLayout& layout = problem.layout();
  std::vector<double> values;
  for (const auto& p : lanczos.pairs) values.push_back(p.value);
  if (!values.empty()) {
    write_hdf5_row_shards(out.staged("eigenvectors.h5"), "eigenvectors", lanczos.vectors.data(), shard.begin,
                          shard.rows(), n, static_cast<int64_t>(values.size()), comm);
    files.push_back("eigenvectors.h5");
    files.push_back("eigenvalues.npy");
  }
  std::vector<double> diag_all = diagonal.empty() ? std::vector<double>() : gather_to_root(diagonal, shard, comm);
  std::vector<double> err_all = diagonal_err.empty() ? std::vector<double>() : gather_to_root(diagonal_err, shard, comm);
  if (!diagonal.empty()) files.insert(files.end(), {"diagonal.npy", "diagonal.h5"});
  if (!nodes.empty()) files.insert(files.end(), {"density.csv", "slq_nodes.csv"});
  files.push_back("layout.json");
  std::string png_problem;
  run_collectively(comm, [&] {
    if (!r.root()) return;
    if (!values.empty()) write_npy(out.staged("eigenvalues.npy"), values.data(), {static_cast<int64_t>(values.size())});
    if (!nodes.empty()) {
      std::ofstream d(out.staged("density.csv"));
      d.precision(17);
      d << "lambda,density\n";
      for (std::size_t i = 0; i < density.grid.size(); ++i) d << density.grid[i] << "," << density.density[i] << "\n";
      std::ofstream q(out.staged("slq_nodes.csv"));
      q.precision(17);
      q << "probe,node,weight\n";
      for (const auto& x : nodes) q << x.probe << "," << x.node << "," << x.weight << "\n";
      if (!d || !q) throw ResourceError("cannot write density.csv in '" + o.out + "' (disk full?)");
    }
    if (!diag_all.empty()) {
      write_npy(out.staged("diagonal.npy"), diag_all.data(), {n});
      std::vector<NamedArray> arrays;
      for (const auto& p : layout.parameters()) arrays.push_back({p.name, p.shape, diag_all.data() + p.offset});
      if (!err_all.empty())
        for (const auto& p : layout.parameters())
          arrays.push_back({p.name + ".stderr", p.shape, err_all.data() + p.offset});
      write_hdf5_arrays(out.staged("diagonal.h5"), arrays);
    }
    write_json(out.staged("layout.json"), layout.to_json());
    if (!nodes.empty()) {
      std::vector<std::string> args = {"--out", out.staged("spectrum.png"), "--density", out.staged("density.csv"),
                                       "--title", "Hessian spectral density (SLQ), n = " + std::to_string(n)};
      if (!values.empty()) {
        std::vector<double> ends = {values.front(), values.back()};
        write_npy(out.staged("extremes.tmp.npy"), ends.data(), {2});
        args.insert(args.end(), {"--extremes", out.staged("extremes.tmp.npy")});
      }
      png_problem = draw_spectrum(args);
      std::remove(out.staged("extremes.tmp.npy").c_str());
    }
  });
  if (!nodes.empty()) {
    if (png_problem.empty()) files.push_back("spectrum.png");
    else warn(r, "spectrum.png not drawn: " + png_problem);
  }
  timings["io"] = MPI_Wtime() - t_io;
  timings["total"] = MPI_Wtime() - t_start;

  if (!diagonal.empty()) {
    json per_param = json::object();
    for (const auto& p : layout.parameters()) {
      double sum = 0, maxabs = 0;
      if (r.root())
        for (int64_t i = 0; i < p.size; ++i) sum += diag_all[p.offset + i], maxabs = std::max(maxabs, std::abs(diag_all[p.offset + i]));
      per_param[p.name] = {{"sum", sum}, {"max_abs", maxabs}};
    }
    summary["diagonal"] = {{"mode", diagonal_mode}, {"probes", diagonal_mode == "exact" ? n : so.diagonal_probes},
                           {"per_parameter", per_param}};
  }
  // With the exact diagonal at hand its sum is the trace; the estimates stay, labelled as such.
  if (diagonal_mode == "exact") {
    double local = 0;
    for (double d : diagonal) local += d;
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, &local, 1, MPI_DOUBLE, MPI_SUM, comm), "MPI_Allreduce");
    summary["trace"]["value"] = local;
    summary["trace"]["exact"] = true;
    summary["trace"]["method"] = "exact: sum of the exact diagonal";
    summary["trace"]["stderr"] = 0.0;
  }
  auto peaks = gather_doubles(r, static_cast<double>(peak_rss_bytes()));
  summary["method"] = "matrix-free (Lanczos, SLQ, Hutchinson)";
  summary["command_line"] = o.command_line;
  summary["n"] = n;
  summary["ranks"] = r.size;
  summary["out"] = o.out;
  summary["devices"] = gather_strings(r, l.device);
  summary["threads_per_rank"] = l.threads;
  summary["model"] = model_summary(o, l);
  summary["hvp_products"] = op.products();
  const json torch_notes = report_torch_warnings(r);
  summary["hvp"] = {{"mode", engine->mode_description()}, {"unbatched_ops", torch_notes["unbatched_ops"]}};
  summary["torch_warnings"] = torch_notes["other"];
  summary["timings_seconds"] = timings;
  summary["memory"] = {{"peak_rss_per_rank", peaks},
                       {"peak_rss_max_human", human_bytes(*std::max_element(peaks.begin(), peaks.end()))},
                       {"plan_bytes_per_rank", planned}};
  if (!values.empty()) summary["eigenvalues"] = {{"values", values}, {"largest", values.back()}, {"smallest", values.front()}};
  files.push_back("summary.json");
  summary["files"] = files;
  run_collectively(comm, [&] {
    if (r.root()) write_json(out.staged("summary.json"), summary);
  });
  out.commit(files);

  std::string text = "dhess spectrum: n = " + std::to_string(n) + ", " + std::to_string(op.products()) +
                     " Hessian-vector products, " + std::to_string(timings["total"].get<double>()) + " s, peak " +
                     summary["memory"]["peak_rss_max_human"].get<std::string>() + " per rank\n";
  if (!values.empty()) {
    text += "  extreme eigenvalues (" + std::to_string(lanczos.steps) + " Lanczos steps):";
    for (double v : values) text += " " + std::to_string(v);
    text += "\n";
  }
  if (summary.contains("trace")) text += trace_line(summary["trace"]);
  text += "  results in " + o.out + ":";
  for (const auto& f : files) text += " " + f;
  say(r, o, text + "\n");
}

}  // namespace dhess
