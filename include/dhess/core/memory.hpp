#pragma once
// Resident memory of this process, memory available to it (Linux /proc and cgroups), cache size.
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <string>

#include "dhess/core/placement.hpp"

namespace dhess {

std::size_t peak_rss_bytes();     // VmHWM
std::size_t current_rss_bytes();  // VmRSS
// Resets the peak so the next peak_rss_bytes() covers one phase only.
void reset_peak_rss();
// The peak bytes `work` adds to the resident set, from a heap given back to the kernel first (glibc
// would otherwise reuse what earlier work freed and hide the growth), and given back after.
double peak_bytes_of(const std::function<void()>& work);
// Where the memory limits of this process are read: /proc/self/cgroup and the cgroup file systems
// (v2 unified, v1 "memory" hierarchy), /proc/meminfo, the environment. Tests point them elsewhere.
struct MemorySources {
  std::string proc_cgroup = "/proc/self/cgroup";
  std::string cgroup_root = "/sys/fs/cgroup";
  std::string meminfo = "/proc/meminfo";
  EnvLookup env = [](const char* name) { return std::getenv(name); };
};

// The memory one rank may use, and where that number came from: the smallest of the node's
// MemAvailable and the memory limit of this process's cgroup (the job's under SLURM or in a
// container; cgroup v1 or v2, the tightest of the cgroup and its ancestors), each shared by the
// `ranks_on_node` ranks, and SLURM's --mem (SLURM_MEM_PER_NODE, shared likewise) and
// --mem-per-cpu (SLURM_MEM_PER_CPU times the task's CPUs).
struct MemoryBudget {
  double bytes = 0;
  std::string source;  // e.g. "SLURM_MEM_PER_CPU = 2048 MB x 1 CPU per task"
};
MemoryBudget memory_budget(int ranks_on_node, const MemorySources& sources = {});
// Size of the largest CPU cache (L3 on most machines); 32 MiB where the system does not say.
std::size_t last_level_cache_bytes();
// "4.37 GB"
std::string human_bytes(double bytes);

}  // namespace dhess
