#pragma once
// What every command does the same way: ranks, printing on rank 0, loading and checking the
// problem on every rank, gathering per-rank numbers, the shared parts of summary.json.
#include <mpi.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dhess/core/placement.hpp"
#include "dhess/run/options.hpp"
#include "dhess/torch/problem.hpp"

namespace dhess {

using json = nlohmann::json;

struct Rank {
  MPI_Comm comm;
  int rank = 0, size = 1;
  explicit Rank(MPI_Comm c);
  bool root() const { return rank == 0; }
};

// Prints on rank 0 unless --quiet.
void say(const Rank& r, const RunOptions& o, const std::string& text);
void warn(const Rank& r, const std::string& text);
EnvLookup process_env();

// Everything about a loaded problem that the commands share.
struct Loaded {
  std::unique_ptr<Problem> problem;
  ProblemCheck check;
  std::string device;
  int threads = 1;
  NodePlacement place;
};
// Loads and checks the problem on every rank (errors agreed on all ranks). With `shards` > 1 each
// rank keeps its data shard (dhess spectrum) before the first pass, whose loss and gradient are
// then summed over the shards. Refuses (ResourceError) a first pass projected past the memory.
Loaded load(const RunOptions& o, const Rank& r, int shards = 1);

std::vector<double> gather_doubles(const Rank& r, double mine);
std::vector<std::string> gather_strings(const Rank& r, const std::string& mine);

// Torch's collected warnings over all ranks, printed once by rank 0 as dhess lines:
// {"unbatched_ops": [...], "other": [...]} for summary.json. Collective.
json report_torch_warnings(const Rank& r);

// The model part of summary.json.
json model_summary(const RunOptions& o, const Loaded& l);

}  // namespace dhess
