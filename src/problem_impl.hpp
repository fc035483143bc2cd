#pragma once
// Internal to the torch translation units: the torch side of a Problem.
#include <torch/script.h>

#include <string>
#include <vector>

#include "dhess/problem.hpp"

namespace dhess {

struct MicroBatch {
  std::vector<torch::Tensor> inputs;  // positional arguments of forward()
  torch::Tensor targets;              // undefined when there are none
  double weight = 1;                  // share of the whole data set's mean loss
};

enum class LossKind { cross_entropy, mse, nll, bce_with_logits, none };

struct Problem::Impl {
  ProblemSpec spec;
  std::string description;
  torch::jit::Module module;
  torch::Device device{torch::kCPU};
  torch::ScalarType scalar_type = torch::kFloat64;
  LossKind loss = LossKind::none;
  std::vector<torch::Tensor> params;  // selected parameters, layout order
  ParameterLayout layout;
  std::vector<MicroBatch> batches;
  int64_t num_samples = 0;
  int64_t forward_arity = 0;  // number of forward() arguments besides self
  std::vector<torch::Tensor> all_inputs;  // the whole data set (micro-batches are views of it)
  torch::Tensor all_targets;

  // Micro-batches of samples [begin, end), weighted as shares of the whole data set.
  void split(int64_t begin, int64_t end);
  // The sample ranges split() makes of [begin, end).
  std::vector<std::pair<int64_t, int64_t>> pieces(int64_t begin, int64_t end) const;
  // Samples [begin, end) as one micro-batch, weighted as their share of the data set.
  MicroBatch slice(int64_t begin, int64_t end) const;

  // Weighted loss of one micro-batch, as a graph over `params`.
  torch::Tensor loss_of(const MicroBatch& batch) const;
  // Gradient of the weighted micro-batch loss with create_graph; undefined
  // entries (parameters the loss does not use) are left undefined.
  std::vector<torch::Tensor> gradient_graph(const MicroBatch& batch) const;
};

// Builds a built-in model as a TorchScript module plus its synthetic data.
struct BuiltinProblem {
  torch::jit::Module module;
  torch::Tensor inputs;
  torch::Tensor targets;
  LossKind loss;
  std::string description;
};
bool is_builtin(const std::string& model);
BuiltinProblem make_builtin(const std::string& model);

// One parameter tensor and every name it goes by: a tied weight (a decoder that reuses the
// embedding) is listed by named_parameters() once per name but is one variable of the loss.
struct SharedTensor {
  std::vector<std::string> names;
  torch::Tensor tensor;
};
// The module's parameters, each tensor once (same storage, offset, sizes and strides) under its
// first name, with its other names; throws InputError for a tensor that shares only part of
// another's elements (a view of part of it), which cannot get rows of its own without counting
// those elements twice.
std::vector<SharedTensor> distinct_parameters(const torch::jit::Module& module);

LossKind parse_loss(const std::string& name);
const char* loss_name(LossKind kind);

}  // namespace dhess
