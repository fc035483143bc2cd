// The loss of one micro-batch: forward() on its inputs, then the mean-reduced loss of the output
// and the targets (or forward's own scalar with --loss none), weighted by the batch's share.
#include <torch/csrc/autograd/autograd.h>

#include "dhess/core/errors.hpp"
#include "problem_impl.hpp"

namespace dhess {
namespace {

// Class targets (integers) must fit the output [N, C, ...]: torch would index out of range.
void require_class_targets(Loss loss, const torch::Tensor& y, const torch::Tensor& t, const std::string& data) {
  if (t.is_floating_point()) {
    if (loss == Loss::nll)
      throw InputError("--loss nll needs integer class targets; " + data + " has " +
                       std::string(c10::toString(t.scalar_type())) + " targets");
    if (y.sizes() != t.sizes())
      throw InputError("--loss cross_entropy with probability targets: model output shape " + shape_of(y) +
                       " does not match targets shape " + shape_of(t));
    return;
  }
  if (y.dim() < 2 || y.size(0) != t.size(0) || t.dim() != y.dim() - 1)
    throw InputError(std::string("--loss ") + loss_name(loss) + ": model output shape " + shape_of(y) +
                     " does not fit class targets of shape " + shape_of(t) + " (expected output [N, C, ...])");
  const torch::Tensor kept = t.masked_select(t.ne(kIgnoredClass));
  if (kept.numel() == 0) return;
  const int64_t lo = kept.min().item<int64_t>(), hi = kept.max().item<int64_t>();
  if (lo < 0 || hi >= y.size(1))
    throw InputError("targets of " + data + " hold class " + std::to_string(lo < 0 ? lo : hi) +
                     " but the model outputs " + std::to_string(y.size(1)) + " classes (output shape " + shape_of(y) +
                     "; " + std::to_string(kIgnoredClass) + ", torch's ignore_index, is left out of the mean)");
}

torch::Tensor mean_loss(Loss loss, const torch::Tensor& y, const torch::Tensor& targets, const std::string& data) {
  switch (loss) {
    case Loss::none:
      if (y.numel() != 1)
        throw InputError("--loss none: model forward returned shape " + shape_of(y) + ", not a scalar loss");
      return y.reshape({});
    case Loss::cross_entropy:
    case Loss::nll:
      require_class_targets(loss, y, targets, data);
      return loss == Loss::nll ? at::nll_loss(y, targets) : at::cross_entropy_loss(y, targets);
    case Loss::mse:
    case Loss::bce_with_logits:
      // torch would broadcast mismatched shapes with only a warning: a classic silent bug.
      if (y.sizes() != targets.sizes())
        throw InputError(std::string("--loss ") + loss_name(loss) + ": model output shape " + shape_of(y) +
                         " does not match targets shape " + shape_of(targets) + " from " + data);
      return loss == Loss::mse ? at::mse_loss(y, targets) : at::binary_cross_entropy_with_logits(y, targets);
  }
  throw InternalError("unknown loss");
}

}  // namespace

const char* loss_name(Loss loss) {
  switch (loss) {
    case Loss::cross_entropy: return "cross_entropy";
    case Loss::mse: return "mse";
    case Loss::nll: return "nll";
    case Loss::bce_with_logits: return "bce_with_logits";
    case Loss::none: return "none";
  }
  return "?";
}

Evaluation Problem::Impl::evaluate(const MicroBatch& batch) const {
  std::vector<c10::IValue> args(batch.inputs.begin(), batch.inputs.end());
  if (loss == Loss::none && batch.targets.defined() && static_cast<int64_t>(args.size()) < forward_arity)
    args.emplace_back(batch.targets);
  c10::IValue out;
  try {
    out = const_cast<torch::jit::Module&>(module).forward(args);
  } catch (const std::exception& e) {
    std::string shapes;
    for (const auto& t : batch.inputs) shapes += (shapes.empty() ? "" : ", ") + shape_of(t);
    throw InputError("model forward failed on inputs of shape " + (shapes.empty() ? "()" : shapes) +
                     (spec.data.empty() ? "" : " from data file '" + spec.data + "'") + ": " + torch_message(e));
  }
  if (!out.isTensor())
    throw InputError("model forward returned a " + out.tagKind() +
                     "; dhess needs one tensor (the model output, or the loss with --loss none)");
  const torch::Tensor y = out.toTensor();
  const torch::Tensor value = mean_loss(loss, y, batch.targets, "data file '" + spec.data + "'") * batch.weight;
  return {loss == Loss::none ? torch::Tensor() : y, value};
}

LossTerms Problem::Impl::loss_terms(const torch::Tensor& y, const MicroBatch& batch) const {
  const torch::Tensor& t = batch.targets;
  switch (loss) {
    case Loss::cross_entropy:
    case Loss::nll: {
      // One term per target position; -100 (ignore_index) gives a zero term and is not counted.
      const torch::Tensor terms = loss == Loss::nll
                                      ? at::nll_loss_nd(y, t, {}, at::Reduction::None, kIgnoredClass)
                                      : at::cross_entropy_loss(y, t, {}, at::Reduction::None, kIgnoredClass);
      const int64_t counted = t.is_floating_point() ? terms.numel() : t.ne(kIgnoredClass).sum().item<int64_t>();
      return {terms.reshape(-1), counted > 0 ? batch.weight / static_cast<double>(counted) : 0.0};
    }
    case Loss::mse:
    case Loss::bce_with_logits: {
      // One term per row of the last dimension (a sample's outputs); the mean is over elements.
      const torch::Tensor elements =
          loss == Loss::mse ? (y - t).pow(2) : at::binary_cross_entropy_with_logits(y, t, {}, {}, at::Reduction::None);
      const torch::Tensor terms = y.dim() > 1 ? elements.sum(-1) : elements;
      return {terms.reshape(-1), batch.weight / static_cast<double>(y.numel())};
    }
    case Loss::none: break;
  }
  throw InternalError("the loss's terms asked of --loss none");
}

std::vector<torch::Tensor> Problem::Impl::gradient_of(const torch::Tensor& value) const {
  if (!value.requires_grad())
    throw InputError("the loss does not depend on any selected parameter (check --params and the model)");
  try {
    return torch::autograd::grad({value}, params, {}, /*retain_graph=*/true, /*create_graph=*/true,
                                 /*allow_unused=*/true);
  } catch (const c10::Error& e) {
    throw no_derivative(e);
  } catch (const std::runtime_error& e) {  // autograd's NotImplemented node throws these
    throw no_derivative(e);
  }
}

}  // namespace dhess
