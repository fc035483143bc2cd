#include "dhess/core/memory.hpp"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace dhess {
namespace {

std::size_t status_field_kb(const char* path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) {
      std::istringstream s(line.substr(key.size()));
      std::size_t kb = 0;
      s >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

std::size_t read_number(const char* path) {
  std::ifstream in(path);
  std::string v;
  if (!(in >> v) || v == "max") return 0;
  try {
    return static_cast<std::size_t>(std::stoull(v));
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

std::size_t peak_rss_bytes() { return status_field_kb("/proc/self/status", "VmHWM:"); }
std::size_t current_rss_bytes() { return status_field_kb("/proc/self/status", "VmRSS:"); }

void reset_peak_rss() {
  // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

double peak_bytes_of(const std::function<void()>& work) {
  malloc_trim(0);
  reset_peak_rss();
  const double before = static_cast<double>(current_rss_bytes());
  work();
  const double peak = static_cast<double>(peak_rss_bytes()) - before;
  malloc_trim(0);
  return peak;
}

namespace {

// The tightest memory limit on the cgroup at `path` and its ancestors under one hierarchy.
struct CgroupLimit {
  double bytes = 0;  // 0 = none
  std::string file;
};

CgroupLimit tightest_limit(const std::string& mount, std::string path, const char* limit_file) {
  CgroupLimit best;
  while (true) {
    const std::string file = mount + (path == "/" ? "" : path) + "/" + limit_file;
    const double limit = static_cast<double>(read_number(file.c_str()));
    // "max" (v2) reads as 0 and v1's "no limit" is 2^63 rounded to a page: neither is a limit.
    if (limit > 0 && limit < 1e18 && (best.bytes == 0 || limit < best.bytes)) best = {limit, file};
    if (path.empty() || path == "/") return best;
    const std::size_t slash = path.find_last_of('/');
    path = slash == 0 ? "/" : path.substr(0, slash);
  }
}

// This process's memory limit: the v2 line "0::/path" (unified hierarchy at the root or under
// unified/) or the v1 line "N:...memory...:/path" of /proc/self/cgroup.
CgroupLimit cgroup_limit(const MemorySources& sources) {
  std::ifstream in(sources.proc_cgroup);
  CgroupLimit best;
  for (std::string line; std::getline(in, line);) {
    const std::size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    std::vector<CgroupLimit> found;
    if (controllers.empty()) {
      found.push_back(tightest_limit(sources.cgroup_root, path, "memory.max"));
      found.push_back(tightest_limit(sources.cgroup_root + "/unified", path, "memory.max"));
    } else if (("," + controllers + ",").find(",memory,") != std::string::npos) {
      found.push_back(tightest_limit(sources.cgroup_root + "/memory", path, "memory.limit_in_bytes"));
    }
    for (const auto& f : found)
      if (f.bytes > 0 && (best.bytes == 0 || f.bytes < best.bytes)) best = f;
  }
  return best;
}

// A positive number of MB in the environment variable `name`, else 0.
double env_megabytes(const EnvLookup& env, const char* name) {
  const char* text = env(name);
  if (!text || !*text) return 0;
  char* end = nullptr;
  const double mb = std::strtod(text, &end);
  return end && *end == '\0' && mb > 0 ? mb * 1024 * 1024 : 0;
}

std::string shared_by(int ranks) { return ranks > 1 ? " shared by " + std::to_string(ranks) + " ranks" : ""; }

}  // namespace

MemoryBudget memory_budget(int ranks_on_node, const MemorySources& sources) {
  const int ranks = std::max(1, ranks_on_node);
  std::vector<MemoryBudget> candidates;
  const double available = static_cast<double>(status_field_kb(sources.meminfo.c_str(), "MemAvailable:"));
  candidates.push_back({available / ranks, "MemAvailable " + human_bytes(available) + " on the node" + shared_by(ranks)});
  // The job's limit covers all its ranks on the node, each of which the plan counts whole.
  const CgroupLimit cgroup = cgroup_limit(sources);
  if (cgroup.bytes > 0)
    candidates.push_back({cgroup.bytes / ranks, "cgroup limit " + human_bytes(cgroup.bytes) + " (" + cgroup.file + ")" +
                                                    shared_by(ranks)});
  if (const double node = env_megabytes(sources.env, "SLURM_MEM_PER_NODE"); node > 0)
    candidates.push_back({node / ranks, std::string("SLURM_MEM_PER_NODE = ") + sources.env("SLURM_MEM_PER_NODE") +
                                            " MiB" + shared_by(ranks)});
  if (const double cpu = env_megabytes(sources.env, "SLURM_MEM_PER_CPU"); cpu > 0) {
    const char* cpus_text = sources.env("SLURM_CPUS_PER_TASK");
    const int cpus = cpus_text && std::atoi(cpus_text) > 0 ? std::atoi(cpus_text) : 1;
    candidates.push_back({cpu * cpus, std::string("SLURM_MEM_PER_CPU = ") + sources.env("SLURM_MEM_PER_CPU") + " MiB x " +
                                          std::to_string(cpus) + " CPU(s) per task"});
  }
  return *std::min_element(candidates.begin(), candidates.end(),
                           [](const MemoryBudget& a, const MemoryBudget& b) { return a.bytes < b.bytes; });
}

std::size_t last_level_cache_bytes() {
  // sysfs first: sysconf's figure can be the whole package's (320 MiB on a VM whose L3 is 32 MiB).
  int best_level = 0;
  std::size_t best = 0;
  for (int index = 0; index < 16; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size");
    int level = 0;
    std::size_t size = 0;
    std::string unit;
    if (!(level_file >> level) || !(size_file >> size)) continue;
    size_file >> unit;
    size <<= unit == "K" ? 10 : unit == "M" ? 20 : 0;
    if (level > best_level) best_level = level, best = size;
  }
  if (best > 0) return best;
  const long bytes = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return bytes > 0 ? static_cast<std::size_t>(bytes) : std::size_t(32) << 20;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB", "PB"};
  int u = 0;
  while (bytes >= 1000 && u < 5) bytes /= 1000, ++u;
  char text[32];
  std::snprintf(text, sizeof text, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return text;
}

}  // namespace dhess
