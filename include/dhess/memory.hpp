#pragma once
// Resident memory of this process and memory available to it (Linux /proc and cgroups).
#include <cstddef>
#include <string>

namespace dhess {

std::size_t peak_rss_bytes();     // VmHWM
std::size_t current_rss_bytes();  // VmRSS
// Resets the peak so the next peak_rss_bytes() covers one phase only.
void reset_peak_rss();
// MemAvailable, lowered to the cgroup limit when one is set.
std::size_t available_memory_bytes();
// "4.37 GB"
std::string human_bytes(double bytes);

}  // namespace dhess
