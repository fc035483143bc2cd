#include "pipeline_support.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "dhess/collective.hpp"
#include "dhess/errors.hpp"

#ifndef DHESS_PLOT_SCRIPT
#define DHESS_PLOT_SCRIPT "plot_spectrum.py"
#endif

namespace dhess::detail {

Rank::Rank(MPI_Comm c) : comm(c) {
  MPI_Comm_rank(c, &rank);
  MPI_Comm_size(c, &size);
}

void say(const Rank& r, const RunOptions& o, const std::string& text) {
  if (!r.root() || o.quiet) return;
  std::fputs(text.c_str(), stdout);
  std::fflush(stdout);
}

void warn(const Rank& r, const std::string& text) {
  if (!r.root()) return;
  std::fprintf(stderr, "dhess: warning: %s\n", text.c_str());
}

EnvLookup process_env() {
  return [](const char* name) { return std::getenv(name); };
}

Loaded load(const RunOptions& o, const Rank& r) {
  Loaded l;
  NodePlacement place = node_placement(r.comm, process_env());
  l.threads = threads_per_rank(o.threads, process_env(), cores_available(), place.local_size);
  run_collectively(r.comm, [&] {
    set_compute_threads(l.threads);
    l.device = resolve_device(o.device, place.local_rank);
    ProblemSpec spec = o.problem;
    spec.device = l.device;
    l.problem = std::make_unique<Problem>(spec);
  });
  run_collectively(r.comm, [&] { l.check = l.problem->check(); });
  for (const auto& name : l.check.unused_parameters)
    warn(r, "the loss does not use parameter '" + name + "': its rows and columns of H are exactly zero");
  return l;
}

std::vector<double> gather_doubles(const Rank& r, double mine) {
  std::vector<double> all(r.size);
  check_mpi(MPI_Allgather(&mine, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, r.comm), "MPI_Allgather");
  return all;
}

std::vector<std::string> gather_strings(const Rank& r, const std::string& mine) {
  char buf[64] = {0};
  std::strncpy(buf, mine.c_str(), sizeof buf - 1);
  std::vector<char> all(64 * r.size);
  check_mpi(MPI_Allgather(buf, 64, MPI_CHAR, all.data(), 64, MPI_CHAR, r.comm), "MPI_Allgather");
  std::vector<std::string> out;
  for (int i = 0; i < r.size; ++i) out.emplace_back(&all[64 * i]);
  return out;
}

json model_summary(const RunOptions& o, const Loaded& l) {
  const Problem& p = *l.problem;
  return {{"path", o.problem.model},
          {"data", o.problem.data},
          {"description", p.description()},
          {"loss", p.loss_name()},
          {"loss_value", l.check.loss},
          {"gradient_norm", l.check.gradient_norm},
          {"samples", p.num_samples()},
          {"micro_batches", p.num_micro_batches()},
          {"params_regex", o.problem.params_regex},
          {"train_mode", o.problem.train_mode},
          {"unused_parameters", l.check.unused_parameters}};
}

std::string draw_spectrum(const std::vector<std::string>& arguments) {
  // A picture is a convenience: no Python or matplotlib costs a warning, not the run.
  const char* script = std::getenv("DHESS_PLOT_SCRIPT");
  const char* python = std::getenv("DHESS_PYTHON");
  std::string command = std::string(python ? python : "/usr/bin/python3") + " '" + (script ? script : DHESS_PLOT_SCRIPT) + "'";
  for (const auto& a : arguments) command += " '" + a + "'";
  command += " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return "cannot start " + command;
  std::string output;
  char buf[256];
  while (std::fgets(buf, sizeof buf, pipe)) output += buf;
  int status = pclose(pipe);
  if (status != 0) return "plot script failed: " + first_line(output);
  return "";
}

}  // namespace dhess::detail
