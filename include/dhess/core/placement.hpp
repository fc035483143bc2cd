#pragma once
// Where a rank runs: its place on the node, its GPU, its threads (torch's side: torch/device.hpp).
#include <mpi.h>

#include <functional>
#include <string>

namespace dhess {

using EnvLookup = std::function<const char*(const char*)>;

struct NodePlacement {
  int local_rank = 0;  // this rank's index among the ranks of its node
  int local_size = 1;  // ranks on this node
};
// SLURM_LOCALID, else OMPI_COMM_WORLD_LOCAL_RANK, else the rank within MPI_COMM_TYPE_SHARED.
NodePlacement node_placement(MPI_Comm comm, const EnvLookup& env);
int local_rank_from(const EnvLookup& env, int shared_rank);

// GPU index for a rank: its local rank modulo the devices it can see (one
// device when SLURM bound exactly one to the task).
int gpu_for_rank(int local_rank, int visible_devices);

// Intra-op threads per rank: --threads if given, else SLURM_CPUS_PER_TASK,
// else the cores this process may use divided among the node's ranks.
int threads_per_rank(int requested, const EnvLookup& env, int cores_available, int local_size);
int cores_available();

}  // namespace dhess
