#pragma once
// The commands a user runs before the real run: what it will take, and what the model is.
#include <mpi.h>

#include <string>

#include "dhess/run/options.hpp"

namespace dhess {

// dhess plan: memory per rank, HVP count and rate, time estimates, whether it fits, for
// `planned_ranks` ranks (0 = the ranks of `comm`).
void run_plan(const RunOptions& options, int planned_ranks, bool as_json, MPI_Comm comm);
// dhess layout: prints the parameter layout and writes layout.json into --out.
void run_layout(const RunOptions& options, MPI_Comm comm);
// dhess export: writes a built-in model and its data as files Python can load.
void run_export(const RunOptions& options, const std::string& model_path, const std::string& data_path, MPI_Comm comm);

}  // namespace dhess
