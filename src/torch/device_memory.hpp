#pragma once
// Memory on the rank's compute device. On a GPU a product's tensors live in device memory, which
// the host's resident set does not show and the node's memory does not bound: the HVP engine
// measures them here and narrows its panel to what the device holds.
#include <torch/torch.h>

#include <functional>

namespace dhess {

// The peak bytes `work` adds to the CUDA caching allocator's reserved memory on `device` (its cache
// emptied first, so that blocks freed by earlier work cannot hide the growth).
double device_peak_bytes_of(const torch::Device& device, const std::function<void()>& work);
// The device's free memory now, as the driver reports it.
double device_free_bytes(const torch::Device& device);

}  // namespace dhess
