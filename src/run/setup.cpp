#include "dhess/run/setup.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

#include "dhess/core/collective.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/torch/device.hpp"

namespace dhess {

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

namespace {

// A frozen layer is in H like any parameter; say so, since PyHessian and optimizers skip it.
void note_frozen(const Rank& r, const RunOptions& o, const std::vector<std::string>& frozen) {
  if (frozen.empty() || !r.root() || o.quiet) return;
  std::string names;
  for (std::size_t i = 0; i < frozen.size() && i < 4; ++i) names += (i ? ", " : "") + frozen[i];
  if (frozen.size() > 4) names += " and " + std::to_string(frozen.size() - 4) + " more";
  std::fprintf(stderr,
               "dhess: note: %zu parameter(s) have requires_grad=False in the model (%s): H covers them like every "
               "parameter; to leave them out, pass --params a regex of the others\n",
               frozen.size(), names.c_str());
}

}  // namespace

Loaded load(const RunOptions& o, const Rank& r) {
  Loaded l;
  l.place = node_placement(r.comm, process_env());
  l.threads = threads_per_rank(o.threads, process_env(), cores_available(), l.place.local_size);
  run_collectively(r.comm, [&] {
    capture_torch_warnings();
    set_compute_threads(l.threads);
    l.device = resolve_device(o.device, l.place.local_rank);
    ProblemSpec spec = o.problem;
    spec.device = l.device;
    l.problem = std::make_unique<Problem>(spec);
  });
  run_collectively(r.comm, [&] { l.check = l.problem->check(); });
  for (const auto& name : l.check.unused_parameters)
    warn(r, "the loss does not use parameter '" + name + "': its rows and columns of H are exactly zero");
  note_frozen(r, o, l.problem->layout().frozen());
  return l;
}

std::vector<double> gather_doubles(const Rank& r, double mine) {
  std::vector<double> all(r.size);
  MPI_Allgather(&mine, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, r.comm);
  return all;
}

std::vector<std::string> gather_strings(const Rank& r, const std::string& mine) {
  char buf[64] = {0};
  std::strncpy(buf, mine.c_str(), sizeof buf - 1);
  std::vector<char> all(64 * r.size);
  MPI_Allgather(buf, 64, MPI_CHAR, all.data(), 64, MPI_CHAR, r.comm);
  std::vector<std::string> out;
  for (int i = 0; i < r.size; ++i) out.emplace_back(&all[64 * i]);
  return out;
}

namespace {

// Every rank's strings, each once, sorted.
std::vector<std::string> union_over_ranks(const Rank& r, const std::vector<std::string>& mine) {
  std::string joined;
  for (const auto& s : mine) joined += s + '\n';
  int length = static_cast<int>(joined.size());
  std::vector<int> lengths(r.size), displs(r.size, 0);
  MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, r.comm);
  for (int i = 1; i < r.size; ++i) displs[i] = displs[i - 1] + lengths[i - 1];
  std::vector<char> all(static_cast<std::size_t>(displs.back() + lengths.back()));
  MPI_Allgatherv(joined.data(), length, MPI_CHAR, all.data(), lengths.data(), displs.data(), MPI_CHAR, r.comm);
  std::set<std::string> unique;
  std::istringstream lines(std::string(all.begin(), all.end()));
  for (std::string line; std::getline(lines, line);) unique.insert(line);
  return {unique.begin(), unique.end()};
}

}  // namespace

json report_torch_warnings(const Rank& r) {
  const TorchWarnings mine = torch_warnings();
  const auto ops = union_over_ranks(r, mine.unbatched_ops);
  const auto other = union_over_ranks(r, mine.other);
  if (!ops.empty() && r.root()) {
    std::string names;
    for (const auto& op : ops) names += (names.empty() ? "" : ", ") + op;
    std::fprintf(stderr,
                 "dhess: note: LibTorch has no vmap batching rule for %s: inside each batched product these ran one "
                 "vector at a time (exact, slower)\n",
                 names.c_str());
  }
  for (const auto& w : other) warn(r, "torch: " + w);
  return {{"unbatched_ops", ops}, {"other", other}};
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
          {"params_regex", o.problem.params_text},
          {"train_mode", o.problem.train_mode},
          {"unused_parameters", l.check.unused_parameters},
          {"frozen_parameters", p.layout().frozen()}};
}

}  // namespace dhess
