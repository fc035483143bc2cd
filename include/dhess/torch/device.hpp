#pragma once
// The torch side of where a rank runs: its torch device and compute threads, and torch's
// warnings, collected instead of printed.
#include <string>
#include <vector>

namespace dhess {

enum class DeviceChoice { cpu, cuda, automatic };

// A torch device string ("cpu", "cuda:1"): the rank's GPU from its local rank where there are
// GPUs (automatic, cuda); throws UsageError for cuda without any.
std::string resolve_device(DeviceChoice wanted, int local_rank);
// The LibTorch dhess was built against: "LibTorch 2.13.0, CPU only", "LibTorch 2.14.1 with CUDA 13.0".
std::string libtorch_build();
// What this process sees now: "2 GPU(s) visible" (a CUDA build), "no GPU support" (a CPU build).
std::string devices_visible();

// Torch's intra-op threads and OpenBLAS's (Debian's OpenBLAS ignores torch's setting).
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
