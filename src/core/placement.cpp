#include "dhess/core/placement.hpp"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "dhess/core/errors.hpp"

namespace dhess {
namespace {
int parse_nonnegative(const char* text) {
  if (!text || !*text) return -1;
  char* end = nullptr;
  long v = std::strtol(text, &end, 10);
  return (*end == '\0' && v >= 0 && v < 1 << 20) ? static_cast<int>(v) : -1;
}
}  // namespace

int local_rank_from(const EnvLookup& env, int shared_rank) {
  for (const char* name : {"SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"}) {
    int v = parse_nonnegative(env(name));
    if (v >= 0) return v;
  }
  return shared_rank;
}

NodePlacement node_placement(MPI_Comm comm, const EnvLookup& env) {
  MPI_Comm node;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  NodePlacement p;
  int shared_rank = 0;
  MPI_Comm_rank(node, &shared_rank);
  MPI_Comm_size(node, &p.local_size);
  MPI_Comm_free(&node);
  p.local_rank = local_rank_from(env, shared_rank);
  return p;
}

int gpu_for_rank(int local_rank, int visible_devices) {
  if (visible_devices <= 0) return -1;
  return local_rank % visible_devices;
}

int cores_available() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}

int threads_per_rank(int requested, const EnvLookup& env, int cores, int local_size) {
  if (requested > 0) return requested;
  int slurm = parse_nonnegative(env("SLURM_CPUS_PER_TASK"));
  if (slurm > 0) return slurm;
  return std::max(1, cores / std::max(1, local_size));
}

}  // namespace dhess
