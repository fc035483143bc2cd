#include "dhess/run/setup.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

#include "dhess/core/collective.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/core/memory.hpp"
#include "dhess/run/feasibility.hpp"
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

// The shards' parts of the first pass, summed into the whole data set's loss and gradient; a
// parameter is unused only where no shard uses it.
void sum_over_shards(const Rank& r, const ParameterLayout& layout, ProblemCheck& c) {
  MPI_Allreduce(MPI_IN_PLACE, &c.loss, 1, MPI_DOUBLE, MPI_SUM, r.comm);
  constexpr std::size_t chunk = std::size_t(1) << 30;  // MPI counts are ints
  for (std::size_t at = 0; at < c.gradient.size(); at += chunk)
    MPI_Allreduce(MPI_IN_PLACE, c.gradient.data() + at, static_cast<int>(std::min(chunk, c.gradient.size() - at)),
                  MPI_DOUBLE, MPI_SUM, r.comm);
  const auto& params = layout.parameters();
  std::vector<int> used(params.size(), 1);
  for (const auto& name : c.unused_parameters) used[layout.index_of(name)] = 0;
  MPI_Allreduce(MPI_IN_PLACE, used.data(), static_cast<int>(used.size()), MPI_INT, MPI_MAX, r.comm);
  c.unused_parameters.clear();
  for (std::size_t i = 0; i < params.size(); ++i)
    if (!used[i]) c.unused_parameters.push_back(params[i].name);
}

// The first pass holds the graph of its largest micro-batch at once. Its memory is projected
// from passes over fewer samples and refused before it runs, rather than killed by the kernel
// halfway. A pass below kNoiseFloor measures the allocator more than the model, so the probe
// grows past it first; small passes also overstate the growth per sample, so while the
// projection exceeds the budget and the next probe stays within 3/4 of it, the probe doubles.
constexpr double kNoiseFloor = 64e6;

struct Projection {
  double bytes = 0, per_sample = 0;  // of the largest pass, and what one more sample adds
};

Projection project_first_pass(const Problem& p, int64_t most, double budget) {
  auto bytes = [&](int64_t k) { return p.pass_memory(k); };
  const double process = static_cast<double>(current_rss_bytes());
  auto affordable = [&](double next) { return process + next <= 0.75 * budget; };
  int64_t k = 16;
  double at_k = bytes(k);
  while (at_k < kNoiseFloor && 4 * k <= most && affordable(2 * at_k)) at_k = bytes(k *= 2);
  double at_2k = bytes(2 * k);
  for (;;) {
    Projection out;
    // Below the floor the difference is noise: charge every byte to the samples instead.
    out.per_sample = at_k < kNoiseFloor ? at_2k / static_cast<double>(2 * k)
                                        : std::max(0.0, (at_2k - at_k) / static_cast<double>(k));
    out.bytes = process + at_2k + out.per_sample * static_cast<double>(most - 2 * k);
    const double next = at_2k + out.per_sample * static_cast<double>(2 * k);
    if (out.bytes <= budget || 8 * k > most || !affordable(next)) return out;
    k *= 2;
    at_k = at_2k;
    at_2k = bytes(2 * k);
  }
}

void require_first_pass_fits(const RunOptions& o, const Rank& r, const Loaded& l, int shards) {
  const Problem& p = *l.problem;
  const int64_t most = p.largest_micro_batch();
  const MemoryBudget budget = memory_per_rank(o, l.place.local_size, r.comm);
  double need[2] = {0, 0};  // bytes of the largest pass, and of one more sample
  // A model that fails here fails alike on every rank: the error is agreed, like check()'s.
  run_collectively(r.comm, [&] {
    if (l.device != "cpu" || most <= 64) return;
    const Projection pr = project_first_pass(p, most, budget.bytes);
    need[0] = pr.bytes;
    need[1] = pr.per_sample;
  });
  MPI_Allreduce(MPI_IN_PLACE, need, 2, MPI_DOUBLE, MPI_MAX, r.comm);
  if (need[0] <= budget.bytes) return;
  const double fixed = need[0] - need[1] * static_cast<double>(most);
  const auto fitting = static_cast<int64_t>((budget.bytes - fixed) / std::max(need[1], 1.0) / 2);
  const std::string pass = o.problem.batch_size > 0 ? "a micro-batch of --batch-size"
                           : shards > 1             ? "this rank's data shard"
                                                    : "the whole data set at once";
  run_collectively(r.comm, [&] {
    throw ResourceError("one pass over " + std::to_string(most) + " samples (" + pass + ") needs about " +
                        human_bytes(need[0]) + " per rank (its graph and a product grow by about " +
                        human_bytes(need[1]) + " per sample, measured on passes over fewer samples) but " +
                        human_bytes(budget.bytes) + " is available per rank (" + budget.source + "); " +
                        (fitting >= 1
                             ? "pass --batch-size " + std::to_string(fitting) + " (micro-batches sum to the same H)"
                             : "a single sample does not fit: give each rank more memory") +
                        (shards > 1 ? ", or use more ranks (each takes a shard of the samples)" : ""));
  });
}

}  // namespace

Loaded load(const RunOptions& o, const Rank& r, int shards) {
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
  if (shards > 1) l.problem->keep_shard(r.rank, shards);
  require_first_pass_fits(o, r, l, shards);
  run_collectively(r.comm, [&] { l.check = l.problem->check(); });
  if (shards > 1) sum_over_shards(r, l.problem->layout(), l.check);
  // The norm is all that is kept of the gradient: n doubles would stay for the whole run.
  double sq = 0;
  for (double g : l.check.gradient) sq += g * g;
  l.check.gradient_norm = std::sqrt(sq);
  std::vector<double>().swap(l.check.gradient);
  for (const auto& name : l.check.unused_parameters)
    warn(r, "the loss does not use parameter '" + name + "': its rows and columns of H are exactly zero");
  note_frozen(r, o, l.problem->layout().frozen());
  // A --blocks group that matches nothing is refused now, not after the products.
  if (o.blocks.kind != BlockSpec::Kind::none)
    run_collectively(r.comm, [&] { group_parameters(l.problem->layout(), o.blocks); });
  if (o.problem.curvature == Curvature::ggn && l.problem->loss_name() == std::string("nll"))
    warn(r,
         "--loss nll is linear in the model's outputs (log-probabilities): their loss Hessian, and so the "
         "Gauss-Newton matrix, is exactly zero; for the GGN of the softmax cross-entropy, end the model at the "
         "logits and use --loss cross_entropy");
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
          {"curvature", curvature_name(o.problem.curvature)},
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
