#pragma once
// Resident memory of this process, memory available to it (Linux /proc and cgroups), cache size.
#include <cstddef>
#include <string>

namespace dhess {

std::size_t peak_rss_bytes();     // VmHWM
std::size_t current_rss_bytes();  // VmRSS
// Resets the peak so the next peak_rss_bytes() covers one phase only.
void reset_peak_rss();
// MemAvailable, lowered to the cgroup limit when one is set.
std::size_t available_memory_bytes();
// Size of the largest CPU cache (L3 on most machines); 32 MiB where the system does not say.
std::size_t last_level_cache_bytes();
// "4.37 GB"
std::string human_bytes(double bytes);

}  // namespace dhess
