#include "dhess/torch/device.hpp"

#include <torch/torch.h>

#include <mutex>
#include <regex>
#include <set>

#include "dhess/core/errors.hpp"
#include "dhess/core/placement.hpp"

extern "C" void openblas_set_num_threads(int);

namespace dhess {
namespace {

class CollectingHandler : public c10::WarningHandler {
 public:
  void process(const c10::Warning& warning) override {
    const std::string message = warning.msg();
    static const std::regex missing_rule(R"(batching rule for ([A-Za-z0-9_:.]*[A-Za-z0-9_]))");
    std::smatch m;
    std::lock_guard<std::mutex> lock(mutex_);
    if (std::regex_search(message, m, missing_rule))
      ops_.insert(m[1]);
    else
      other_.insert(first_line(message));
  }
  TorchWarnings collected() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {{ops_.begin(), ops_.end()}, {other_.begin(), other_.end()}};
  }

 private:
  std::mutex mutex_;
  std::set<std::string> ops_, other_;
};

CollectingHandler& collecting_handler() {
  static CollectingHandler handler;
  return handler;
}

}  // namespace

void capture_torch_warnings() { c10::WarningUtils::set_warning_handler(&collecting_handler()); }

TorchWarnings torch_warnings() { return collecting_handler().collected(); }

std::string resolve_device(DeviceChoice wanted, int local_rank) {
  if (wanted == DeviceChoice::cpu) return "cpu";
  int count = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (count == 0) {
    if (wanted == DeviceChoice::cuda)
      throw UsageError("--device cuda: this rank sees no CUDA device (or dhess was built with CPU LibTorch)");
    return "cpu";
  }
  return "cuda:" + std::to_string(gpu_for_rank(local_rank, count));
}

std::string libtorch_build() { return DHESS_TORCH_BUILD; }

std::string devices_visible() {
#ifdef DHESS_WITH_CUDA
  const auto count = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  return std::to_string(count) + " GPU(s) visible";
#else
  return "no GPU support";
#endif
}

void set_compute_threads(int threads) {
  torch::set_num_threads(threads);
  // Debian's OpenBLAS ignores torch's setting; ScaLAPACK's BLAS calls go through it.
  openblas_set_num_threads(threads);
}

}  // namespace dhess
