#include "dhess/cli.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "dhess/collective.hpp"
#include "dhess/errors.hpp"
#include "dhess/interrupt.hpp"
#include "dhess/pipeline.hpp"

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

void add_problem_options(OptionTable& t, RunOptions& o, std::string& dtype) {
  t.option("--model", o.problem.model,
           "TorchScript file (torch.jit.script(m).save(path)) or builtin:convnet[:HW], builtin:mlp", every_command);
  t.option("--data", o.problem.data, "torch.save file with (inputs, targets) or {'inputs':..., 'targets':...}",
           every_command);
  t.option("--loss", o.problem.loss, "cross_entropy | mse | nll | bce_with_logits | none (forward returns the loss)",
           every_command);
  t.option("--params", o.problem.params_regex, "keep only parameters whose name matches this regex", every_command);
  t.option("--batch-size", o.problem.batch_size, "micro-batch size (H is always that of the mean loss over all data)",
           runs)
      ->check(positive_integer);
  t.flag("--train-mode", o.problem.train_mode, "run the model in train mode (default: eval)", every_command);
  t.option("--dtype", dtype, "float64 (default) | float32", runs);
  t.option("--device", o.device, "cpu | cuda | auto (default): one GPU per rank when there are GPUs", runs);
  t.option("--threads", o.threads, "compute threads per rank (default: SLURM_CPUS_PER_TASK, else cores/ranks)", runs)
      ->check(positive_integer);
}

void add_run_options(OptionTable& t, RunOptions& o) {
  t.option("--out", o.out, "output directory (default: dhess-out)", dense | spectrum | plan | layout);
  t.flag("--force", o.force, "replace an existing result in --out", dense | spectrum | plan | layout);
  t.flag("--save-hessian", o.save_hessian, "also write hessian.h5 (n x n)", dense | plan);
  t.option("--eigen", o.eigen, "values (default) | all | top:K | bottom:K | none (spectrum: top:K | bottom:K)",
           dense | spectrum | plan);
  t.option("--solver", o.solver, "auto (default) | pdsyevd | pdsyevr | elpa | lapack (one process)", dense | plan);
  t.option("--grid", o.grid, "process grid RxC (default: near-square)", dense | plan);
  t.option("--block", o.block, "block size of the block-cyclic matrix (default: 64)", dense | plan)
      ->check(positive_integer);
  t.option("--panel", o.panel, "Hessian columns per HVP pass (default: automatic)", runs)->check(positive_integer);
  t.option("--hvp-mode", o.hvp_mode, "auto (default) | batched | one_column", runs);
  t.option("--checkpoint", o.checkpoint, "directory for finished work (column panels, matrix-free phases)", runs);
  t.flag("--resume", o.resume, "continue from --checkpoint", runs);
  t.option("--mem-per-rank", o.mem_per_rank, "memory per rank in bytes (default: read from the node)", runs);
  t.flag("-q,--quiet", o.quiet, "print only errors", every_command);
}

void add_spectrum_options(OptionTable& t, SpectrumOptions& so) {
  t.option("--top", so.top, "largest eigenpairs (default 10)", spectrum);
  t.option("--bottom", so.bottom, "smallest eigenpairs (default 10)", spectrum);
  t.option("--max-steps", so.max_steps, "Lanczos steps at most (default 300)", spectrum);
  t.option("--tol", so.tolerance, "converged when ||Hz - lambda z|| <= tol * max|lambda| (default 1e-8)", spectrum);
  t.option("--slq-probes", so.slq_probes, "random probes of the density (default 10; 0 = none)", spectrum);
  t.option("--slq-steps", so.slq_steps, "Lanczos steps per probe (default 80)", spectrum);
  t.option("--sigma", so.sigma, "density smoothing relative to the spectrum width (default 0.01)", spectrum);
  t.option("--trace-probes", so.trace_probes, "Hutchinson/Hutch++ products (default 30; 0 = none)", spectrum);
  t.option("--diagonal", so.diagonal, "none | exact | hutchinson | auto (default: exact when n <= 20000)", spectrum);
  t.option("--diagonal-probes", so.diagonal_probes, "probes of the Hutchinson diagonal (default 100)", spectrum);
  t.option("--seed", so.seed, "seed of the random probes (default 0)", spectrum);
}

// In dhess spectrum, --eigen top:K is --top K --bottom 0 and bottom:K the reverse.
void apply_eigen_to_spectrum(const CLI::App& app, const RunOptions& o, SpectrumOptions& so) {
  if (app.count("--eigen") == 0) return;
  if (o.eigen.rfind("top:", 0) != 0 && o.eigen.rfind("bottom:", 0) != 0)
    throw UsageError("--eigen " + o.eigen + " is for the dense run (dhess --eigen " + o.eigen +
                     "); dhess spectrum finds extreme eigenpairs: --eigen top:K, --eigen bottom:K, or --top/--bottom");
  if (app.count("--top") > 0 || app.count("--bottom") > 0)
    throw UsageError("give either --eigen " + o.eigen + " or --top/--bottom to dhess spectrum, not both");
  std::size_t colon = o.eigen.find(':');
  int64_t k = 0;
  try {
    k = std::stoll(o.eigen.substr(colon + 1));
  } catch (const std::exception&) {
  }
  if (k < 1) throw UsageError("--eigen " + o.eigen + ": K must be a positive integer");
  const bool top = o.eigen[0] == 't';
  so.top = top ? k : 0;
  so.bottom = top ? 0 : k;
}

}  // namespace

int run_cli(int argc, char** argv, MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  RunOptions o;
  o.command_line = join_args(argc, argv);
  std::string dtype = "float64";
  std::string model_out = "model.pt", data_out = "data.pt";

  CLI::App app{"dhess: the full Hessian of a network's loss on many MPI ranks, and its eigendecomposition"};
  app.set_version_flag("--version", "dhess 0.1.0");
  // Job scripts append overrides to a shared argument list: the last value wins.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  OptionTable table(app);
  add_problem_options(table, o, dtype);
  add_run_options(table, o);
  SpectrumOptions so;
  add_spectrum_options(table, so);
  std::string method = "dense";
  table.option("--method", method, "dense (default) | lanczos (the same as the spectrum subcommand)", dense | spectrum);

  auto* layout_command = app.add_subcommand("layout", "print the parameter layout and write layout.json");
  int planned_ranks = 0;
  bool plan_json = false;
  auto* plan_command = app.add_subcommand("plan", "pre-flight: memory per rank, time estimate, whether it fits");
  plan_command->add_option("--ranks", planned_ranks, "plan for this many ranks (default: the ranks of this job)")
      ->check(positive_integer);
  plan_command->add_flag("--json", plan_json, "print the plan as JSON");
  auto* spectrum_command =
      app.add_subcommand("spectrum", "matrix-free: Lanczos extremes, SLQ density, trace, diagonal");
  auto* export_command = app.add_subcommand("export", "write a built-in model and its data as model.pt / data.pt");
  export_command->add_option("--model-out", model_out, "TorchScript file to write")->required();
  export_command->add_option("--data-out", data_out, "torch.save file to write")->required();
  for (auto* sub : {layout_command, plan_command, spectrum_command, export_command}) sub->fallthrough();
  app.require_subcommand(0, 1);

  unsigned command = dense;
  try {
    app.parse(argc, argv);
    command = *layout_command     ? layout
              : *plan_command     ? plan
              : *export_command   ? exporter
              : *spectrum_command ? spectrum
              : method == "lanczos" ? spectrum
                                    : dense;
    if (method != "dense" && method != "lanczos")
      throw UsageError("--method '" + method + "' is not one of dense, lanczos");
    table.check(command);
    if (command == spectrum) apply_eigen_to_spectrum(app, o, so);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return rank == 0 ? app.exit(e) : 0;  // --help, --version
    // Every rank parsed the same arguments, so all exit here alike; one line, from rank 0.
    if (rank == 0) std::fprintf(stderr, "dhess: error: %s (see dhess --help)\n", first_line(e.what()).c_str());
    return static_cast<int>(ExitCode::usage);
  } catch (const UsageError& e) {
    if (rank == 0) std::fprintf(stderr, "dhess: error: %s\n", e.what());
    return static_cast<int>(ExitCode::usage);
  }

  try {
    run_collectively(comm, [&] { o.problem.dtype = parse_dtype(dtype); });
    // Only the dense and matrix-free runs poll the flag, checkpoint and stop cleanly.
    if (command == layout || command == plan || command == exporter) restore_stop_signals();
    if (command == layout)
      run_layout(o, comm);
    else if (command == plan)
      run_plan(o, planned_ranks, plan_json, comm);
    else if (command == exporter)
      run_export(o, model_out, data_out, comm);
    else if (command == spectrum)
      run_spectrum(o, so, comm);
    else
      run_dense(o, comm);
    return 0;
  } catch (const Error& e) {
    if (e.agreed()) {
      if (rank == 0) std::fprintf(stderr, "dhess: error: %s\n", e.what());
      return static_cast<int>(e.code());
    }
    std::fprintf(stderr, "dhess: error on rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    MPI_Abort(comm, static_cast<int>(e.code()));
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "dhess: error on rank %d: out of memory\n", rank);
    std::fflush(stderr);
    MPI_Abort(comm, static_cast<int>(ExitCode::resource));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dhess: internal error on rank %d: %s\n", rank, first_line(e.what()).c_str());
    std::fflush(stderr);
    MPI_Abort(comm, static_cast<int>(ExitCode::internal));
  }
  return static_cast<int>(ExitCode::internal);
}

}  // namespace dhess
