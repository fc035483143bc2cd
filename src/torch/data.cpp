// The data: samples loaded from a torch.save file (or a built-in's), checked against the model and
// the loss, converted to the run's dtype and device, and split into micro-batches and shards.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>

#include "dhess/core/errors.hpp"
#include "problem_impl.hpp"

namespace dhess {
namespace {

c10::IValue load_pickle(const std::string& path) {
  require_file(path, "data");
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    return torch::jit::pickle_load(bytes);
  } catch (const std::exception& e) {
    // A pickled Dataset or custom class needs Python to read it; its tensors do not.
    throw InputError("data file '" + path + "' is not a readable torch.save file: " + torch_message(e) +
                     " (save tensors only: torch.save((inputs, targets), path))");
  }
}

std::vector<torch::Tensor> tensors_of(const c10::IValue& v, const std::string& what, const std::string& path) {
  if (v.isTensor()) return {v.toTensor()};
  std::vector<torch::Tensor> out;
  auto take = [&](const c10::IValue& e) {
    if (!e.isTensor())
      throw InputError("data file '" + path + "': " + what + " must be a tensor or a tuple of tensors, found " +
                       e.tagKind());
    out.push_back(e.toTensor());
  };
  if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) take(e);
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) take(e);
  } else {
    throw InputError("data file '" + path + "': " + what + " must be a tensor or a tuple of tensors, found " +
                     v.tagKind());
  }
  if (out.empty()) throw InputError("data file '" + path + "': " + what + " is an empty tuple");
  return out;
}

// (inputs, targets), [inputs, targets] or {"inputs": ..., "targets": ...}.
Samples parse_samples(const c10::IValue& v, const std::string& path, Loss loss) {
  const std::string expected = "dhess needs (inputs, targets) or {'inputs': ..., 'targets': ...}";
  if (v.isGenericDict()) {
    c10::IValue inputs, targets;
    for (const auto& item : v.toGenericDict()) {
      if (!item.key().isString()) continue;
      if (item.key().toStringRef() == "inputs") inputs = item.value();
      if (item.key().toStringRef() == "targets") targets = item.value();
    }
    if (inputs.isNone()) throw InputError("data file '" + path + "' is a dict without key 'inputs'; " + expected);
    if (targets.isNone()) {
      if (loss != Loss::none) throw InputError("data file '" + path + "' is a dict without key 'targets'; " + expected);
      return {tensors_of(inputs, "inputs", path), torch::Tensor()};
    }
    if (!targets.isTensor()) throw InputError("data file '" + path + "': targets must be a tensor");
    return {tensors_of(inputs, "inputs", path), targets.toTensor()};
  }
  if (v.isTensor()) {
    if (loss == Loss::none) return {{v.toTensor()}, torch::Tensor()};
    throw InputError("data file '" + path + "' holds a single tensor of shape " + shape_of(v.toTensor()) + "; " +
                     expected);
  }
  std::vector<c10::IValue> items;
  if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) items.push_back(e);
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) items.push_back(e);
  } else {
    throw InputError("data file '" + path + "' holds a " + v.tagKind() + "; " + expected);
  }
  if (items.size() != 2 || !items[1].isTensor())
    throw InputError("data file '" + path + "' holds a sequence of " + std::to_string(items.size()) + " items; " +
                     expected +
                     (items.size() > 2 ? " (a list of samples? stack them: (torch.stack(xs), torch.stack(ys)))" : ""));
  return {tensors_of(items[0], "inputs", path), items[1].toTensor()};
}

// Throws naming how many entries of `t` are NaN/Inf and where the first one is.
void require_finite(const torch::Tensor& t, const std::string& what) {
  if (!t.is_floating_point()) return;
  auto mask = ~torch::isfinite(t);
  auto bad = mask.sum().item<int64_t>();
  if (bad == 0) return;
  std::vector<int64_t> first;
  if (t.dim() > 0) {
    auto index = mask.nonzero()[0].to(torch::kCPU).contiguous();  // nonzero() is column-major
    first.assign(index.data_ptr<int64_t>(), index.data_ptr<int64_t>() + index.numel());
  }
  throw InputError(what + " contain " + std::to_string(bad) + " NaN or Inf value" + (bad > 1 ? "s" : "") +
                   ", the first at " + shape_string(first));
}

std::string data_name(const ProblemSpec& spec) {
  return spec.data.empty() ? std::string("built-in data") : "data file '" + spec.data + "'";
}

void convert_inputs(Problem::Impl& p, std::vector<torch::Tensor>& inputs) {
  const std::string data = data_name(p.spec);
  for (auto& t : inputs) {
    require_finite(t, "inputs of " + data);
    if (t.is_floating_point() && t.scalar_type() != p.scalar_type) {
      t = t.to(p.scalar_type);
      require_finite(t, "inputs of " + data + " converted to --dtype " + dtype_name(p.spec.dtype));
    }
    t = t.to(p.device);
  }
}

torch::Tensor convert_targets(const Problem::Impl& p, torch::Tensor targets) {
  if (!targets.defined()) return targets;
  const std::string data = data_name(p.spec);
  require_finite(targets, "targets of " + data);
  const bool classes = p.loss == Loss::cross_entropy || p.loss == Loss::nll;
  if (targets.scalar_type() == torch::kBool && classes)
    throw InputError(data + ": boolean targets cannot be class indices for --loss " + loss_name(p.loss));
  if (classes && !targets.is_floating_point())
    targets = targets.to(torch::kLong);
  else if (targets.is_floating_point() || p.loss != Loss::none)  // forward's own labels stay integers
    targets = targets.to(p.scalar_type);
  return targets.to(p.device);
}

// Prefix counts of the class targets torch's mean counts (not ignore_index); empty when every
// sample weighs the same (no class targets, or none ignored).
std::vector<int64_t> counted_targets(const Problem::Impl& p) {
  const torch::Tensor& t = p.all_targets;
  const bool classes = p.loss == Loss::cross_entropy || p.loss == Loss::nll;
  if (!classes || !t.defined() || t.is_floating_point() || p.all_inputs.empty()) return {};
  const torch::Tensor kept = t.ne(kIgnoredClass).reshape({p.num_samples, -1}).sum(1).cpu();
  const int64_t total = kept.sum().item<int64_t>();
  if (total == t.numel()) return {};
  if (total == 0)
    throw InputError("every target of " + data_name(p.spec) + " is " + std::to_string(kIgnoredClass) +
                     " (torch's ignore_index): the mean loss over no targets is undefined");
  std::vector<int64_t> before(static_cast<std::size_t>(p.num_samples) + 1, 0);
  const auto* k = kept.data_ptr<int64_t>();
  for (int64_t i = 0; i < p.num_samples; ++i) before[i + 1] = before[i] + k[i];
  return before;
}

// The number of samples, after checking that every input and the targets agree on it.
int64_t count_samples(const ProblemSpec& spec, const Samples& samples) {
  if (samples.inputs.empty()) return 1;
  const std::string data = data_name(spec);
  for (const auto& t : samples.inputs)
    if (t.dim() == 0) throw InputError(data + ": inputs must have a batch dimension, found a scalar");
  const int64_t n = samples.inputs[0].size(0);
  for (const auto& t : samples.inputs)
    if (t.size(0) != n)
      throw InputError(data + ": input tensors disagree on the number of samples (" + shape_of(samples.inputs[0]) +
                       " vs " + shape_of(t) + ")");
  const torch::Tensor& targets = samples.targets;
  if (targets.defined() && (targets.dim() == 0 || targets.size(0) != n))
    throw InputError(data + ": targets of shape " + shape_of(targets) + " do not match " + std::to_string(n) +
                     " input samples");
  if (n == 0) throw InputError(data + " holds no samples");
  return n;
}

bool has_batch_norm(const torch::jit::Module& module) {
  for (const auto& m : module.named_modules()) {
    const auto type = m.value.type()->name();
    if (type && type->name().find("BatchNorm") != std::string::npos) return true;
  }
  return false;
}

}  // namespace

Samples load_samples(const std::string& path, Loss loss) { return parse_samples(load_pickle(path), path, loss); }

void place_samples(Problem::Impl& p, Samples samples, const ForwardArity& arity) {
  convert_inputs(p, samples.inputs);
  samples.targets = convert_targets(p, samples.targets);
  const int64_t given = static_cast<int64_t>(samples.inputs.size());
  const bool targets_passed = p.loss == Loss::none && samples.targets.defined() && given < arity.total;
  if (given + (targets_passed ? 1 : 0) < arity.required || given > arity.total)
    throw InputError("model forward() takes " + std::to_string(arity.total) + " argument(s) but " + data_name(p.spec) +
                     " gives " + std::to_string(given) + " input tensor(s)");
  p.num_samples = count_samples(p.spec, samples);
  p.all_inputs = std::move(samples.inputs);
  p.all_targets = samples.targets;
  p.counted = counted_targets(p);
  p.split(0, p.num_samples);
}

MicroBatch Problem::Impl::slice(int64_t begin, int64_t end) const {
  MicroBatch mb;
  for (const auto& t : all_inputs) mb.inputs.push_back(t.narrow(0, begin, end - begin));
  if (all_targets.defined()) mb.targets = all_targets.narrow(0, begin, end - begin);
  mb.weight = counted.empty()
                  ? static_cast<double>(end - begin) / static_cast<double>(num_samples)
                  : static_cast<double>(counted[end] - counted[begin]) / static_cast<double>(counted.back());
  return mb;
}

std::vector<std::pair<int64_t, int64_t>> Problem::Impl::pieces(int64_t begin, int64_t end) const {
  std::vector<std::pair<int64_t, int64_t>> out;
  const int64_t b = spec.batch_size > 0 ? spec.batch_size : std::max<int64_t>(end - begin, 1);
  for (int64_t s = begin; s < end; s += b) out.emplace_back(s, std::min(b, end - s) + s);
  return out;
}

void Problem::Impl::split(int64_t begin, int64_t end) {
  batches.clear();
  if (all_inputs.empty()) {  // --loss none without data: one term, on the first shard only
    if (begin == 0) batches.push_back({{}, all_targets, 1.0});
    return;
  }
  // A micro-batch of padding only (no class target counted) weighs nothing: it is left out.
  for (const auto& [s, e] : pieces(begin, end))
    if (MicroBatch mb = slice(s, e); mb.weight > 0) batches.push_back(std::move(mb));
}

void Problem::keep_shard(int rank, int size) {
  const int64_t n = impl_->all_inputs.empty() ? 1 : impl_->num_samples;
  impl_->split(n * rank / size, n * (rank + 1) / size);
}

void Problem::require_separable(int shards) const {
  const Impl& p = *impl_;
  if (p.all_inputs.empty()) return;
  // The first two pieces of the split this run makes that count in the mean; together they are one
  // slice, in which any piece of padding only between them counts for nothing either.
  std::vector<std::pair<int64_t, int64_t>> first;
  for (int s = 0; s < shards && first.size() < 2; ++s)
    for (const auto& piece : p.pieces(p.num_samples * s / shards, p.num_samples * (s + 1) / shards))
      if (first.size() < 2 && p.slice(piece.first, piece.second).weight > 0) first.push_back(piece);
  if (first.size() < 2) return;
  const auto [a0, a1] = first[0];
  const auto [b0, b1] = first[1];
  torch::NoGradGuard no_grad;
  auto mean_loss = [&](int64_t begin, int64_t end) {
    MicroBatch mb = p.slice(begin, end);
    mb.weight = 1;
    return p.loss_of(mb).item<double>();
  };
  // Each piece weighs what it counts in the mean: its samples, or its targets not ignored.
  const double wa = p.slice(a0, a1).weight, wb = p.slice(b0, b1).weight;
  const double a = mean_loss(a0, a1), again = mean_loss(a0, a1), b = mean_loss(b0, b1), together = mean_loss(a0, b1);
  const double apart = (wa * a + wb * b) / (wa + wb);
  const double rounding = p.scalar_type == torch::kFloat64 ? 1e-9 : 1e-4;
  const double scale = std::max({std::abs(a), std::abs(b), std::abs(together), 1e-300});
  const std::string split = shards > 1 && first[1].first == p.num_samples / shards
                                ? "data shards of dhess spectrum on " + std::to_string(shards) + " ranks"
                                : "micro-batches of --batch-size " + std::to_string(p.spec.batch_size);
  const std::string fix = "give the whole data set to one forward pass (no --batch-size" +
                          std::string(shards > 1 ? "; dhess spectrum on 1 rank, or the dense command" : "") + ")";
  if (std::abs(again - a) > rounding * scale)
    throw UsageError("the loss of samples [" + std::to_string(a0) + ", " + std::to_string(a1) + ") is " +
                     std::to_string(a) + " and then " + std::to_string(again) +
                     ": the model's forward is random (Dropout in train mode?), so its Hessian is not defined; "
                     "drop --train-mode");
  if (std::abs(together - apart) <= rounding * scale) return;
  std::string cause = p.spec.train_mode && has_batch_norm(p.module)
                          ? "BatchNorm in train mode normalizes by the statistics of the batch it sees"
                      : p.loss == Loss::none ? "with --loss none, forward must return the mean loss over its samples"
                                             : "the model's forward mixes samples";
  throw UsageError("the samples are coupled: the loss of samples [" + std::to_string(a0) + ", " + std::to_string(b1) +
                   ") evaluated together is " + std::to_string(together) + " but " + std::to_string(apart) +
                   " as the weighted mean of [" + std::to_string(a0) + ", " + std::to_string(a1) + ") and [" +
                   std::to_string(b0) + ", " + std::to_string(b1) + ") evaluated apart, so " + split +
                   " would give the Hessian of a different loss (" + cause + "); " +
                   (p.spec.train_mode ? "run in eval mode (drop --train-mode), or " : "") + fix);
}

}  // namespace dhess
