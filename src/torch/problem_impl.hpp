#pragma once
// Internal to the torch translation units: the torch side of a Problem, and the pieces that
// build it (model.cpp: the module and its parameters; data.cpp: the samples and their split;
// loss.cpp: the loss of a micro-batch).
#include <torch/script.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "curvature.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/torch/problem.hpp"

namespace dhess {

struct MicroBatch {
  std::vector<torch::Tensor> inputs;  // positional arguments of forward()
  torch::Tensor targets;              // undefined when there are none
  double weight = 1;                  // share of the whole data set's mean loss
};

// One micro-batch through forward(), as graphs over the parameters.
struct Evaluation {
  torch::Tensor outputs;  // the model's output; undefined with --loss none (forward returns the loss)
  torch::Tensor loss;     // the weighted loss: the micro-batch's share of the whole data set's mean
};

// The loss's terms unreduced, as one vector -- a term per target that cross_entropy and nll count,
// per row of the last dimension for mse and bce_with_logits -- and the factor by which the weighted
// loss sums them: loss = scale · Σ terms. The empirical Fisher is scale · Σ ∇term ∇termᵀ.
struct LossTerms {
  torch::Tensor terms;
  double scale = 0;
};

struct Problem::Impl {
  ProblemSpec spec;
  std::string description;
  torch::jit::Module module;
  torch::Device device{torch::kCPU};
  torch::ScalarType scalar_type = torch::kFloat64;
  Loss loss = Loss::none;
  std::vector<torch::Tensor> params;  // selected parameters, layout order
  ParameterLayout layout;
  std::vector<MicroBatch> batches;
  int64_t num_samples = 0;
  int64_t forward_arity = 0;              // number of forward() arguments besides self
  std::vector<torch::Tensor> all_inputs;  // the whole data set (micro-batches are views of it)
  torch::Tensor all_targets;
  // With class targets, torch's mean leaves out those equal to ignore_index (-100, as padding
  // in language models): counted[i] is how many of samples [0, i) the mean counts, and a
  // micro-batch's share of the whole mean is its count over the total. Empty: every sample
  // counts alike.
  std::vector<int64_t> counted;
  // check()'s curvature graph where there is one micro-batch: the first HvpEngine takes it rather
  // than build the same graph again.
  std::unique_ptr<CurvatureGraph> first_graph;

  // Micro-batches of samples [begin, end), weighted as shares of the whole data set.
  void split(int64_t begin, int64_t end);
  // The sample ranges split() makes of [begin, end).
  std::vector<std::pair<int64_t, int64_t>> pieces(int64_t begin, int64_t end) const;
  // Samples [begin, end) as one micro-batch, weighted as their share of the data set.
  MicroBatch slice(int64_t begin, int64_t end) const;

  // The model's outputs and weighted loss on one micro-batch (loss.cpp).
  Evaluation evaluate(const MicroBatch& batch) const;
  torch::Tensor loss_of(const MicroBatch& batch) const { return evaluate(batch).loss; }
  // The terms of the loss of `outputs` on `batch`.
  LossTerms loss_terms(const torch::Tensor& outputs, const MicroBatch& batch) const;
  // The gradient of a weighted loss with create_graph; undefined entries (parameters the loss does
  // not use) are left undefined. An op torch cannot differentiate is bad input.
  std::vector<torch::Tensor> gradient_of(const torch::Tensor& value) const;
  // The graph of the run's curvature on one micro-batch (curvature.cpp).
  std::unique_ptr<CurvatureGraph> curvature_graph(const MicroBatch& batch) const;
};

// ---- model.cpp ----------------------------------------------------------------------------------

torch::jit::Module load_model(const std::string& path);

struct ForwardArity {
  int64_t required = 0, total = 0;  // arguments without a default, and all of them (self excluded)
};
ForwardArity forward_arity(const torch::jit::Module& module, const std::string& model);

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

// Moves the module to the problem's device and dtype, ties stay tied, and takes the parameters
// --params selects into `params` and `layout`, each tensor once.
void select_parameters(Problem::Impl& p);

// Why a loss can be NaN/Inf: the tensors of the model that hold such values, or, when there
// are none, the model's own arithmetic.
std::string nonfinite_state(const torch::jit::Module& module);

// torch's default ignore_index of cross_entropy and nll_loss: a class target left out of the mean.
constexpr int64_t kIgnoredClass = -100;

// ---- data.cpp -----------------------------------------------------------------------------------

struct Samples {
  std::vector<torch::Tensor> inputs;  // forward()'s positional arguments, batch dimension first
  torch::Tensor targets;              // undefined when there are none
};
// (inputs, targets), [inputs, targets] or {"inputs": ..., "targets": ...} from a torch.save file.
Samples load_samples(const std::string& path, Loss loss);
// Validates the samples against the model and the loss, converts them to the problem's dtype
// and device, and splits them into micro-batches.
void place_samples(Problem::Impl& p, Samples samples, const ForwardArity& arity);

// ---- messages shared by the torch files -----------------------------------------------------------

std::string shape_of(const torch::Tensor& t);
// Torch's messages carry a TorchScript traceback; the line users need is the last
// "SomethingError: ..." line, which names the shapes.
std::string torch_message(const std::exception& e);
// An op of the model that autograd cannot differentiate (once, or twice), as the input error that
// names it and the fix.
InputError no_derivative(const std::exception& e);
InputError no_second_derivative(const std::exception& e);
// Throws InputError when `path` is missing, a directory, empty or unreadable.
void require_file(const std::string& path, const std::string& what);

// ---- builtin_models.cpp -------------------------------------------------------------------------

// A built-in model as a TorchScript module plus its synthetic data.
struct BuiltinProblem {
  torch::jit::Module module;
  torch::Tensor inputs;
  torch::Tensor targets;
  Loss loss;
  std::string description;
};
bool is_builtin(const std::string& model);
BuiltinProblem make_builtin(const std::string& model);

}  // namespace dhess
