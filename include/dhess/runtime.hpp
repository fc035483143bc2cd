#pragma once
// Where a rank runs: its place on the node, its GPU, its threads.
#include <mpi.h>

#include <functional>
#include <string>
#include <vector>

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

// Torch side (device.cpp).
// "cpu", "cuda" or "auto" → a torch device string ("cpu", "cuda:1"); throws UsageError for cuda without GPUs.
std::string resolve_device(const std::string& wanted, int local_rank);
void set_compute_threads(int threads);

// Torch's warnings are collected instead of printed by the library (a missing vmap batching rule
// warns once per op, per product, per rank): call once before any torch work.
void capture_torch_warnings();
struct TorchWarnings {
  std::vector<std::string> unbatched_ops;  // ops that ran as a loop inside batched products
  std::vector<std::string> other;          // any other warning, first line, once each
};
// What this process collected so far.
TorchWarnings torch_warnings();

}  // namespace dhess
