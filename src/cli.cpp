#include "dhess/cli.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "dhess/collective.hpp"
#include "dhess/errors.hpp"
#include "dhess/interrupt.hpp"
#include "dhess/pipeline.hpp"

namespace dhess {
namespace {

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

void add_problem_options(CLI::App& app, RunOptions& o, std::string& dtype) {
  app.add_option("--model", o.problem.model,
                 "TorchScript file (torch.jit.script(m).save(path)) or builtin:convnet[:HW], builtin:mlp");
  app.add_option("--data", o.problem.data, "torch.save file with (inputs, targets) or {'inputs':..., 'targets':...}");
  app.add_option("--loss", o.problem.loss, "cross_entropy | mse | nll | bce_with_logits | none (forward returns the loss)");
  app.add_option("--params", o.problem.params_regex, "keep only parameters whose name matches this regex");
  app.add_option("--batch-size", o.problem.batch_size, "micro-batch size (H is always that of the mean loss over all data)")
      ->check(positive_integer);
  app.add_flag("--train-mode", o.problem.train_mode, "run the model in train mode (default: eval)");
  app.add_option("--dtype", dtype, "float64 (default) | float32");
  app.add_option("--device", o.device, "cpu | cuda | auto (default): one GPU per rank when there are GPUs");
  app.add_option("--threads", o.threads, "compute threads per rank (default: SLURM_CPUS_PER_TASK, else cores/ranks)")
      ->check(positive_integer);
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
  add_problem_options(app, o, dtype);
  app.add_option("--out", o.out, "output directory (default: dhess-out)");
  app.add_flag("--force", o.force, "replace an existing result in --out");
  app.add_flag("--save-hessian", o.save_hessian, "also write hessian.h5 (n x n)");
  app.add_option("--eigen", o.eigen, "values (default) | all | top:K | bottom:K | none");
  app.add_option("--solver", o.solver, "auto (default) | pdsyevd | pdsyevr | elpa | lapack (one process)");
  app.add_option("--grid", o.grid, "process grid RxC (default: near-square)");
  app.add_option("--block", o.block, "block size of the block-cyclic matrix (default: 64)")->check(positive_integer);
  app.add_option("--panel", o.panel, "Hessian columns per HVP pass (default: automatic)")->check(positive_integer);
  app.add_option("--hvp-mode", o.hvp_mode, "auto (default) | batched | one_column");
  app.add_option("--checkpoint", o.checkpoint, "directory for finished column panels");
  app.add_flag("--resume", o.resume, "continue from --checkpoint");
  app.add_option("--mem-per-rank", o.mem_per_rank, "memory per rank in bytes (default: read from the node)");
  app.add_flag("-q,--quiet", o.quiet, "print only errors");

  auto* layout = app.add_subcommand("layout", "print the parameter layout and write layout.json");
  int planned_ranks = 0;
  bool plan_json = false;
  auto* plan = app.add_subcommand("plan", "pre-flight: memory per rank, time estimate, whether it fits");
  plan->add_option("--ranks", planned_ranks, "plan for this many ranks (default: the ranks of this job)")
      ->check(positive_integer);
  plan->add_flag("--json", plan_json, "print the plan as JSON");
  std::string method = "dense";
  app.add_option("--method", method, "dense (default) | lanczos (the same as the spectrum subcommand)");
  SpectrumOptions so;
  auto* spectrum = app.add_subcommand("spectrum", "matrix-free: Lanczos extremes, SLQ density, trace, diagonal");
  spectrum->add_option("--top", so.top, "largest eigenpairs (default 10)");
  spectrum->add_option("--bottom", so.bottom, "smallest eigenpairs (default 10)");
  spectrum->add_option("--max-steps", so.max_steps, "Lanczos steps at most (default 300)");
  spectrum->add_option("--tol", so.tolerance, "converged when ||Hz - lambda z|| <= tol * max|lambda| (default 1e-8)");
  spectrum->add_option("--slq-probes", so.slq_probes, "random probes of the density (default 10; 0 = none)");
  spectrum->add_option("--slq-steps", so.slq_steps, "Lanczos steps per probe (default 80)");
  spectrum->add_option("--sigma", so.sigma, "density smoothing relative to the spectrum width (default 0.01)");
  spectrum->add_option("--trace-probes", so.trace_probes, "Hutchinson/Hutch++ products (default 30; 0 = none)");
  spectrum->add_option("--diagonal", so.diagonal, "none | exact | hutchinson | auto (default: exact when n <= 20000)");
  spectrum->add_option("--diagonal-probes", so.diagonal_probes, "probes of the Hutchinson diagonal (default 100)");
  spectrum->add_option("--seed", so.seed, "seed of the random probes (default 0)");
  auto* exporter = app.add_subcommand("export", "write a built-in model and its data as model.pt / data.pt");
  exporter->add_option("--model-out", model_out, "TorchScript file to write")->required();
  exporter->add_option("--data-out", data_out, "torch.save file to write")->required();
  for (auto* sub : {layout, plan, spectrum, exporter}) sub->fallthrough();
  app.require_subcommand(0, 1);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return rank == 0 ? app.exit(e) : 0;  // --help, --version
    // Every rank parsed the same arguments, so all exit here alike; one line, from rank 0.
    if (rank == 0) std::fprintf(stderr, "dhess: error: %s (see dhess --help)\n", first_line(e.what()).c_str());
    return static_cast<int>(ExitCode::usage);
  }

  try {
    run_collectively(comm, [&] { o.problem.dtype = parse_dtype(dtype); });
    // Only the dense and matrix-free runs poll the flag, checkpoint and stop cleanly.
    if (*layout || *plan || *exporter) restore_stop_signals();
    if (*layout)
      run_layout(o, comm);
    else if (*plan)
      run_plan(o, planned_ranks, plan_json, comm);
    else if (*exporter)
      run_export(o, model_out, data_out, comm);
    else if (*spectrum || method == "lanczos")
      run_spectrum(o, so, comm);
    else if (method != "dense")
      run_collectively(comm, [&] { throw UsageError("--method '" + method + "' is not one of dense, lanczos"); });
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
