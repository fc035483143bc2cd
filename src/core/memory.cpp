#include "dhess/core/memory.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

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

std::size_t available_memory_bytes() {
  std::size_t available = status_field_kb("/proc/meminfo", "MemAvailable:");
  std::size_t limit = read_number("/sys/fs/cgroup/memory.max");
  if (limit == 0) limit = read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  if (limit > 0 && limit < (std::size_t(1) << 60)) {
    std::size_t used = read_number("/sys/fs/cgroup/memory.current");
    if (used == 0) used = read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    available = std::min(available, limit > used ? limit - used : 0);
  }
  return available;
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
