#pragma once
// What makes two runs compute the same numbers, recorded in a checkpoint and compared on --resume.
#include <nlohmann/json.hpp>

#include "dhess/run/options.hpp"
#include "dhess/run/setup.hpp"

namespace dhess {

// The problem's identity: model and data file hashes (rank 0 reads the files once and broadcasts,
// rather than every rank reading them on a shared file system), loss, dtype, n, the parameters
// with their shapes and aliases, train mode, and `settings` (what else the run's numbers depend
// on: the panel width of the dense path, the estimators' settings of the matrix-free path).
// Collective.
nlohmann::json problem_identity(const RunOptions& o, const Rank& r, const Loaded& l, const nlohmann::json& settings);

}  // namespace dhess
