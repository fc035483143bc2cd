#include "dhess/app/cli.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dhess/app/parse.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/core/interrupt.hpp"
#include "dhess/dense/dense_run.hpp"
#include "dhess/matfree/spectrum_run.hpp"
#include "dhess/plan/plan_run.hpp"
#include "dhess/torch/device.hpp"

namespace dhess {
namespace {

// The commands, as bits: every option names the commands that use it, and any other command
// refuses it instead of silently ignoring it.
enum Command : unsigned { dense = 1, spectrum = 2, plan = 4, layout = 8, exporter = 16 };
constexpr unsigned every_command = dense | spectrum | plan | layout | exporter;
constexpr unsigned runs = dense | spectrum | plan;

std::string command_name(unsigned command) {
  switch (command) {
    case dense: return "the dense run (dhess [OPTIONS])";
    case spectrum: return "dhess spectrum";
    case plan: return "dhess plan";
    case layout: return "dhess layout";
    default: return "dhess export";
  }
}

std::string command_names(unsigned commands) {
  std::string text;
  for (unsigned c : {dense, spectrum, plan, layout, exporter})
    if (commands & c) text += (text.empty() ? "" : " and ") + command_name(c);
  return text;
}

// CLI11's own PositiveNumber says "Value 0 not in range 0.000000 to 1.79e308".
const CLI::Validator positive_integer(
    [](std::string& text) -> std::string {
      try {
        std::size_t used = 0;
        long long v = std::stoll(text, &used);
        if (used == text.size() && v > 0) return "";
      } catch (const std::exception&) {
      }
      return "must be a positive integer, not '" + text + "'";
    },
    "POSITIVE");

std::string join_args(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
  return s;
}

// Options registered with the commands that use them.
class OptionTable {
 public:
  explicit OptionTable(CLI::App& app) : app_(app) {}

  template <typename T>
  CLI::Option* option(const std::string& name, T& value, const std::string& help, unsigned commands) {
    return remember(app_.add_option(name, value, help), commands);
  }
  // A flag whose text `parse` turns into its typed option (app/parse.hpp).
  template <typename T>
  CLI::Option* typed(const std::string& name, T& value, T (*parse)(const std::string&), const std::string& help,
                     unsigned commands) {
    auto* option = app_.add_option_function<std::string>(
        name, [&value, parse](const std::string& text) { value = parse(text); }, help);
    return remember(option, commands);
  }
  CLI::Option* flag(const std::string& name, bool& value, const std::string& help, unsigned commands) {
    return remember(app_.add_flag(name, value, help), commands);
  }
  // Throws UsageError for the first option given that `command` does not use.
  void check(unsigned command) const {
    for (const auto& [option, commands] : uses_)
      if (option->count() > 0 && !(commands & command))
        throw UsageError(option->get_name() + " is an option of " + command_names(commands) + ", not of " +
                         command_name(command));
  }

 private:
  CLI::Option* remember(CLI::Option* option, unsigned commands) {
    uses_.emplace_back(option, commands);
    return option;
  }
  CLI::App& app_;
  std::vector<std::pair<CLI::Option*, unsigned>> uses_;
};

// What app/ converts after parsing, when the command and the rank count are known.
struct LateFlags {
  std::string grid, params, mem_per_rank, blocks;
};

std::optional<Loss> parse_optional_loss(const std::string& text) { return parse_loss(text); }
double parse_memory(const std::string& text) { return parse_bytes("--mem-per-rank", text); }

void add_problem_options(OptionTable& t, RunOptions& o, LateFlags& late) {
  t.option("--model", o.problem.model,
           "TorchScript file (torch.jit.script(m).save(path)) or builtin:convnet[:HW], builtin:mlp", every_command);
  t.option("--data", o.problem.data, "torch.save file with (inputs, targets) or {'inputs':..., 'targets':...}",
           every_command);
  t.typed("--loss", o.problem.loss, parse_optional_loss,
          "cross_entropy | mse | nll | bce_with_logits | none (forward returns the loss)", every_command);
  t.typed("--curvature", o.problem.curvature, parse_curvature,
          "hessian (default) | ggn (generalized Gauss-Newton J^T H_L J) | ef (empirical Fisher)", runs);
  t.option("--params", late.params, "keep only parameters whose name matches this regex", every_command);
  t.option("--batch-size", o.problem.batch_size, "micro-batch size (H is always that of the mean loss over all data)",
           runs)
      ->check(positive_integer);
  t.flag("--train-mode", o.problem.train_mode, "run the model in train mode (default: eval)", every_command);
  t.typed("--dtype", o.problem.dtype, parse_dtype, "float64 (default) | float32", runs);
  t.typed("--device", o.device, parse_device, "cpu | cuda | auto (default): one GPU per rank when there are GPUs",
          runs);
  t.option("--threads", o.threads, "compute threads per rank (default: SLURM_CPUS_PER_TASK, else cores/ranks)", runs)
      ->check(positive_integer);
}

void add_run_options(OptionTable& t, RunOptions& o, LateFlags& late) {
  t.option("--out", o.out, "output directory (default: dhess-out)", dense | spectrum | plan | layout);
  t.flag("--force", o.force, "replace an existing result in --out", dense | spectrum | plan | layout);
  t.flag("--save-hessian", o.save_hessian, "also write hessian.h5 (n x n)", dense | plan);
  t.typed("--eigen", o.eigen, parse_eigen_request,
          "values (default) | all | top:K | bottom:K | none (spectrum: top:K | bottom:K)", dense | spectrum | plan);
  t.typed("--solver", o.solver, parse_solver, "auto (default) | pdsyevd | pdsyevr | elpa | lapack (one process)",
          dense | plan);
  t.option("--grid", late.grid, "process grid RxC (default: near-square)", dense | plan);
  t.option("--block", o.block, "block size of the block-cyclic matrix (default: 64)", dense | plan)
      ->check(positive_integer);
  t.option("--panel", o.panel, "Hessian columns per HVP pass (default: automatic)", runs)->check(positive_integer);
  t.typed("--hvp-mode", o.hvp_mode, parse_hvp_mode, "auto (default) | batched | one_column", runs);
  t.option("--compiled", o.compiled,
           "Hessian-vector products compiled by `dhess compile` (its directory or a .pt2 package)", runs);
  t.option("--checkpoint", o.checkpoint, "directory for finished work (column panels, matrix-free phases)", runs);
  t.flag("--resume", o.resume, "continue from --checkpoint", runs);
  t.option("--mem-per-rank", late.mem_per_rank, "memory per rank: bytes, or 4G, 4GiB, 512M (default: from the node)",
           runs);
  t.flag("-q,--quiet", o.quiet, "print only errors", every_command);
  t.option("--blocks", late.blocks,
           "per-block curvature: tensors | modules[:DEPTH] | NAME=REGEX;NAME=REGEX... (trace, share, top eigenvalues)",
           dense | spectrum | plan);
  t.option("--block-top", o.block_top, "largest eigenvalues per block (default 3)", dense | spectrum | plan)
      ->check(positive_integer);
  t.typed("--prior-precision", o.prior_precisions, parse_prior_precisions,
          "log det(C + delta I) for each delta of a comma-separated list (a Laplace approximation's)", dense);
}

void add_spectrum_options(OptionTable& t, SpectrumOptions& so) {
  const CLI::Range non_negative(int64_t(0), std::numeric_limits<int64_t>::max());
  t.option("--top", so.top, "largest eigenpairs (default 10)", spectrum)->check(non_negative);
  t.option("--bottom", so.bottom, "smallest eigenpairs (default 10)", spectrum)->check(non_negative);
  t.option("--max-steps", so.max_steps, "Lanczos steps at most (default 300)", spectrum)->check(positive_integer);
  t.option("--lanczos-basis", so.lanczos_basis,
           "Lanczos vectors held at most; fewer than --max-steps restart it (default: as many as memory holds)",
           spectrum)
      ->check(positive_integer);
  t.option("--tol", so.tolerance,
           "converged when ||Hz - lambda z|| <= tol * max|lambda| (default 1e-8; 1e-5 with --dtype float32)", spectrum)
      ->check(CLI::PositiveNumber);
  t.option("--slq-probes", so.slq_probes, "random probes of the density (default 10; 0 = none)", spectrum)
      ->check(non_negative);
  t.option("--slq-steps", so.slq_steps, "Lanczos steps per probe (default 80)", spectrum)->check(positive_integer);
  t.option("--sigma", so.sigma, "density smoothing relative to the spectrum width (default 0.01)", spectrum)
      ->check(CLI::PositiveNumber);
  t.option("--trace-probes", so.trace_probes, "products of the trace estimate (default 30; 0 = none)", spectrum)
      ->check(non_negative);
  t.typed("--trace-estimator", so.trace_estimator, parse_trace_estimator,
          "hutchpp (default) | hutchinson | both (twice the products)", spectrum);
  t.typed("--diagonal", so.diagonal, parse_diagonal,
          "none | exact | hutchinson | auto (default: exact when n <= 20000)", spectrum);
  t.option("--diagonal-probes", so.diagonal_probes, "probes of the Hutchinson diagonal (default 100)", spectrum)
      ->check(positive_integer);
  t.option("--seed", so.seed, "seed of the random probes (default 0)", spectrum);
  t.flag("--nonzero", so.nonzero,
         "every nonzero eigenpair (certified randomized range finder; for Hessians of low rank)", spectrum);
}

// In dhess spectrum, --eigen top:K is --top K --bottom 0 and bottom:K the reverse.
void apply_eigen_to_spectrum(const CLI::App& app, const RunOptions& o, SpectrumOptions& so) {
  if (app.count("--eigen") == 0) return;
  if (o.eigen.kind != EigenRequest::Kind::top && o.eigen.kind != EigenRequest::Kind::bottom)
    throw UsageError("--eigen " + o.eigen.text() + " is for the dense run (dhess --eigen " + o.eigen.text() +
                     "); dhess spectrum finds extreme eigenpairs: --eigen top:K, --eigen bottom:K, or --top/--bottom");
  if (app.count("--top") > 0 || app.count("--bottom") > 0)
    throw UsageError("give either --eigen " + o.eigen.text() + " or --top/--bottom to dhess spectrum, not both");
  const bool top = o.eigen.kind == EigenRequest::Kind::top;
  so.top = top ? o.eigen.k : 0;
  so.bottom = top ? 0 : o.eigen.k;
}

// --nonzero finds every nonzero eigenpair: the extremes are among them, the trace is their sum;
// the density and the diagonal run only when asked for.
void nonzero_defaults(const CLI::App& app, SpectrumOptions& so) {
  for (const char* flag : {"--top", "--bottom", "--eigen"})
    if (app.count(flag) > 0)
      throw UsageError(std::string(flag) + " does not go with --nonzero, which finds every nonzero eigenpair");
  so.top = so.bottom = 0;
  if (app.count("--slq-probes") == 0) so.slq_probes = 0;
  if (app.count("--trace-probes") == 0) so.trace_probes = 0;
  if (app.count("--diagonal") == 0) so.diagonal = DiagonalMode::none;
}

// The conversions that need the command or the rank count, and the cross-flag rules.
void finish_options(const CLI::App& app, const LateFlags& late, unsigned command, int ranks, RunOptions& o,
                    SpectrumOptions& so) {
  if (!late.grid.empty()) o.grid = parse_grid(late.grid, ranks);
  if (!late.params.empty()) {
    o.problem.params = parse_params(late.params);
    o.problem.params_text = late.params;
  }
  if (!late.mem_per_rank.empty()) o.mem_per_rank = parse_memory(late.mem_per_rank);
  if (o.resume && o.checkpoint.empty()) throw UsageError("--resume needs --checkpoint DIR");
  if (!late.blocks.empty()) o.blocks = parse_blocks(late.blocks);
  if (!o.prior_precisions.empty() && o.eigen.kind != EigenRequest::Kind::values &&
      o.eigen.kind != EigenRequest::Kind::all)
    throw UsageError(
        "--prior-precision sums the logarithms of all n eigenvalues: use it with --eigen values or "
        "--eigen all, not --eigen " +
        o.eigen.text());
  if (command != spectrum) return;
  apply_eigen_to_spectrum(app, o, so);
  if (so.nonzero) nonzero_defaults(app, so);
  if (o.blocks.kind != BlockSpec::Kind::none && so.diagonal == DiagonalMode::none)
    throw UsageError("--blocks takes each block's trace from the diagonal: give --diagonal exact, hutchinson or auto");
  // float32 products carry relative errors near 1e-7: residuals of 1e-8 are out of their reach.
  if (o.problem.dtype == Dtype::float32 && app.count("--tol") == 0) so.tolerance = 1e-5;
}

}  // namespace

namespace {

// Everything the command line holds, parsed: the command and its typed options.
struct CommandLine {
  unsigned command = dense;
  RunOptions options;
  SpectrumOptions spectrum;
  int planned_ranks = 0;
  bool plan_json = false;
  std::string model_out = "model.pt", data_out = "data.pt";
};

// The subcommands; the options they do not share live on the main app (fallthrough), so that
// every option can be refused by name where its command does not use it.
struct Subcommands {
  CLI::App *layout, *plan, *spectrum, *exporter;
};

Subcommands add_subcommands(CLI::App& app, CommandLine& c) {
  Subcommands s;
  s.layout = app.add_subcommand("layout", "print the parameter layout and write layout.json");
  s.plan = app.add_subcommand("plan", "pre-flight: memory per rank, time estimate, whether it fits");
  s.plan->add_option("--ranks", c.planned_ranks, "plan for this many ranks (default: the ranks of this job)")
      ->check(positive_integer);
  s.plan->add_flag("--json", c.plan_json, "print the plan as JSON");
  s.spectrum = app.add_subcommand("spectrum", "matrix-free: Lanczos extremes, SLQ density, trace, diagonal");
  s.exporter = app.add_subcommand("export", "write a built-in model and its data as model.pt / data.pt");
  s.exporter->add_option("--model-out", c.model_out, "TorchScript file to write")->required();
  s.exporter->add_option("--data-out", c.data_out, "torch.save file to write")->required();
  for (auto* sub : {s.layout, s.plan, s.spectrum, s.exporter}) sub->fallthrough();
  app.require_subcommand(0, 1);
  return s;
}

unsigned chosen_command(const Subcommands& s, const std::string& method) {
  if (method != "dense" && method != "lanczos")
    throw UsageError("--method '" + method + "' is not one of dense, lanczos");
  if (*s.layout) return layout;
  if (*s.plan) return plan;
  if (*s.exporter) return exporter;
  return *s.spectrum || method == "lanczos" ? spectrum : dense;
}

// Parses argv into `c`; returns -1 to go on, or the exit code (0 after --help, 64 for bad flags).
// Every rank parses the same arguments, so all return alike; the one error line comes from rank 0.
int parse_command_line(int argc, char** argv, int rank, int size, CommandLine& c) {
  c.options.command_line = join_args(argc, argv);
  CLI::App app{"dhess: the full Hessian of a network's loss on many MPI ranks, and its eigendecomposition"};
  app.set_version_flag("--version", [] {
    return std::string("dhess ") + DHESS_VERSION + " (" + libtorch_build() + "; " + devices_visible() + ")";
  });
  app.footer("dhess compile --help: the Hessian-vector product compiled ahead of time (AOTInductor), for --compiled");
  // Job scripts append overrides to a shared argument list: the last value wins.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  OptionTable table(app);
  LateFlags late;
  add_problem_options(table, c.options, late);
  add_run_options(table, c.options, late);
  add_spectrum_options(table, c.spectrum);
  std::string method = "dense";
  table.option("--method", method, "dense (default) | lanczos (the same as the spectrum subcommand)", dense | spectrum);
  const Subcommands subcommands = add_subcommands(app, c);
  try {
    app.parse(argc, argv);
    c.command = chosen_command(subcommands, method);
    table.check(c.command);
    const int ranks = c.command == plan && c.planned_ranks > 0 ? c.planned_ranks : size;
    finish_options(app, late, c.command, ranks, c.options, c.spectrum);
    return -1;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return rank == 0 ? app.exit(e) : 0;  // --help, --version
    if (rank == 0) std::fprintf(stderr, "dhess: error: %s (see dhess --help)\n", first_line(e.what()).c_str());
  } catch (const UsageError& e) {
    if (rank == 0) std::fprintf(stderr, "dhess: error: %s\n", e.what());
  }
  return static_cast<int>(ExitCode::usage);
}

void run_command(const CommandLine& c, MPI_Comm comm) {
  // Only the dense and matrix-free runs poll the flag, checkpoint and stop cleanly.
  if (c.command == layout || c.command == plan || c.command == exporter) restore_stop_signals();
  switch (c.command) {
    case layout: return run_layout(c.options, comm);
    case plan: return run_plan(c.options, c.planned_ranks, c.plan_json, comm);
    case exporter: return run_export(c.options, c.model_out, c.data_out, comm);
    case spectrum: return run_spectrum(c.options, c.spectrum, comm);
    default: return run_dense(c.options, comm);
  }
}

// An error every rank agreed on exits with its code; one that a rank met alone aborts the job,
// so that no rank waits for it in a collective.
[[noreturn]] void abort_job(MPI_Comm comm, int rank, const std::string& line, ExitCode code) {
  std::fprintf(stderr, "dhess: %s on rank %d: %s\n", code == ExitCode::internal ? "internal error" : "error", rank,
               line.c_str());
  std::fflush(stderr);
  MPI_Abort(comm, static_cast<int>(code));
  std::abort();
}

}  // namespace

int run_cli(int argc, char** argv, MPI_Comm comm) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  CommandLine c;
  if (const int code = parse_command_line(argc, argv, rank, size, c); code >= 0) return code;
  try {
    run_command(c, comm);
    return 0;
  } catch (const Error& e) {
    if (!e.agreed()) abort_job(comm, rank, e.what(), e.code());
    if (rank == 0) std::fprintf(stderr, "dhess: error: %s\n", e.what());
    return static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    abort_job(comm, rank, "out of memory", ExitCode::resource);
  } catch (const std::exception& e) {
    abort_job(comm, rank, first_line(e.what()), ExitCode::internal);
  }
}

}  // namespace dhess
