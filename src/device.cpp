#include <torch/torch.h>

#include "dhess/errors.hpp"
#include "dhess/runtime.hpp"

extern "C" void openblas_set_num_threads(int);

namespace dhess {

std::string resolve_device(const std::string& wanted, int local_rank) {
  if (wanted == "cpu") return "cpu";
  if (wanted != "cuda" && wanted != "auto")
    throw UsageError("--device '" + wanted + "' is not one of cpu, cuda, auto");
  int count = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (count == 0) {
    if (wanted == "cuda") throw UsageError("--device cuda: this rank sees no CUDA device (or dhess was built with CPU LibTorch)");
    return "cpu";
  }
  return "cuda:" + std::to_string(gpu_for_rank(local_rank, count));
}

void set_compute_threads(int threads) {
  torch::set_num_threads(threads);
  // Debian's OpenBLAS ignores torch's setting; ScaLAPACK's BLAS calls go through it.
  openblas_set_num_threads(threads);
}

}  // namespace dhess
