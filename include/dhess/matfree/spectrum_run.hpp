#pragma once
// dhess spectrum: the matrix-free path. Every rank holds the model and a shard of the data; H·v is
// the sum of the shards' products (one reduce-scatter), and all vectors are sharded by rows.
#include <mpi.h>

#include "dhess/run/options.hpp"

namespace dhess {

void run_spectrum(const RunOptions& options, const SpectrumOptions& spectrum, MPI_Comm comm);

}  // namespace dhess
