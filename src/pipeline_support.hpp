#pragma once
// Internal to the command implementations (pipeline.cpp, spectrum.cpp): what
// every command does the same way.
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dhess/pipeline.hpp"
#include "dhess/problem.hpp"
#include "dhess/runtime.hpp"

namespace dhess::detail {

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
};
// Loads and checks the problem on every rank (errors agreed on all ranks).
Loaded load(const RunOptions& o, const Rank& r);

std::vector<double> gather_doubles(const Rank& r, double mine);
std::vector<std::string> gather_strings(const Rank& r, const std::string& mine);

// Torch's collected warnings over all ranks, printed once by rank 0 as dhess lines:
// {"unbatched_ops": [...], "other": [...]} for summary.json. Collective.
json report_torch_warnings(const Rank& r);

// The model part of summary.json.
json model_summary(const RunOptions& o, const Loaded& l);
// Draws spectrum.png with scripts/plot_spectrum.py (Debian's python3-matplotlib);
// `arguments` are the script's (--out PNG, --eigenvalues NPY, --density CSV, ...).
// Returns "" or why it was not drawn.
std::string draw_spectrum(const std::vector<std::string>& arguments);

}  // namespace dhess::detail
