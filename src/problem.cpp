#include <torch/csrc/autograd/autograd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>

#include "dhess/errors.hpp"
#include "problem_impl.hpp"

namespace dhess {
namespace fs = std::filesystem;

Dtype parse_dtype(const std::string& name) {
  if (name == "float64" || name == "double") return Dtype::float64;
  if (name == "float32" || name == "float") return Dtype::float32;
  throw UsageError("--dtype '" + name + "' is not one of float64, float32");
}
const char* dtype_name(Dtype dtype) { return dtype == Dtype::float64 ? "float64" : "float32"; }
std::size_t dtype_bytes(Dtype dtype) { return dtype == Dtype::float64 ? 8 : 4; }

LossKind parse_loss(const std::string& name) {
  if (name == "cross_entropy") return LossKind::cross_entropy;
  if (name == "mse") return LossKind::mse;
  if (name == "nll") return LossKind::nll;
  if (name == "bce_with_logits") return LossKind::bce_with_logits;
  if (name == "none") return LossKind::none;
  throw UsageError("--loss '" + name + "' is not one of cross_entropy, mse, nll, bce_with_logits, none");
}

const char* loss_name(LossKind kind) {
  switch (kind) {
    case LossKind::cross_entropy: return "cross_entropy";
    case LossKind::mse: return "mse";
    case LossKind::nll: return "nll";
    case LossKind::bce_with_logits: return "bce_with_logits";
    case LossKind::none: return "none";
  }
  return "?";
}

namespace {

std::string shape_of(const torch::Tensor& t) { return shape_string(t.sizes().vec()); }

// Torch's messages carry a TorchScript traceback; the line users need is the
// last "SomethingError: ..." line, which names the shapes.
std::string torch_message(const std::exception& e) {
  const auto* ce = dynamic_cast<const c10::Error*>(&e);
  std::string text = ce ? ce->what_without_backtrace() : e.what();
  std::istringstream lines(text);
  std::string line, best;
  static const std::regex error_line(R"(^\s*[A-Za-z_.]*(Error|Exception): .+)");
  while (std::getline(lines, line))
    if (std::regex_match(line, error_line)) best = line;
  if (best.empty()) return first_line(text);
  auto start = best.find_first_not_of(' ');
  return best.substr(start);
}

void require_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(what + " file '" + path + "' does not exist");
  if (fs::is_directory(path, ec)) throw InputError(what + " file '" + path + "' is a directory");
  if (fs::file_size(path, ec) == 0) throw InputError(what + " file '" + path + "' is empty");
  std::ifstream probe(path, std::ios::binary);
  if (!probe) throw InputError(what + " file '" + path + "' cannot be read (permissions?)");
}

torch::jit::Module load_model(const std::string& path) {
  require_file(path, "model");
  try {
    return torch::jit::load(path);
  } catch (const std::exception& e) {
    throw InputError("model file '" + path +
                     "' is not a TorchScript archive (save it with torch.jit.script(m).save(path)): " +
                     torch_message(e));
  }
}

c10::IValue load_pickle(const std::string& path) {
  require_file(path, "data");
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    return torch::jit::pickle_load(bytes);
  } catch (const std::exception& e) {
    throw InputError("data file '" + path + "' is not a readable torch.save file: " + torch_message(e));
  }
}

std::vector<torch::Tensor> tensors_of(const c10::IValue& v, const std::string& what,
                                      const std::string& path) {
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
std::pair<std::vector<torch::Tensor>, torch::Tensor> parse_data(const c10::IValue& v, const std::string& path,
                                                                LossKind loss) {
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
      if (loss != LossKind::none) throw InputError("data file '" + path + "' is a dict without key 'targets'; " + expected);
      return {tensors_of(inputs, "inputs", path), torch::Tensor()};
    }
    if (!targets.isTensor()) throw InputError("data file '" + path + "': targets must be a tensor");
    return {tensors_of(inputs, "inputs", path), targets.toTensor()};
  }
  if (v.isTensor()) {
    if (loss == LossKind::none) return {{v.toTensor()}, torch::Tensor()};
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
    throw InputError("data file '" + path + "' holds a sequence of " + std::to_string(items.size()) +
                     " items; " + expected);
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

int64_t required_arity(const torch::jit::Module& module, int64_t* total) {
  const auto& schema = module.get_method("forward").function().getSchema();
  int64_t required = 0;
  *total = static_cast<int64_t>(schema.arguments().size()) - 1;  // without self
  for (std::size_t i = 1; i < schema.arguments().size(); ++i)
    if (!schema.arguments()[i].default_value()) ++required;
  return required;
}

// Why a loss can be NaN/Inf: the tensors of the model that hold such values,
// or, when there are none, the model's own arithmetic.
std::string nonfinite_state(const torch::jit::Module& module) {
  std::string found;
  auto scan = [&](const std::string& kind, const std::string& name, const torch::Tensor& t) {
    if (!t.is_floating_point()) return;
    auto bad = (~torch::isfinite(t.detach())).sum().item<int64_t>();
    if (bad > 0)
      found += (found.empty() ? "" : ", ") + kind + " '" + name + "' holds " + std::to_string(bad) + " NaN/Inf value" +
               (bad > 1 ? "s" : "");
  };
  for (const auto& np : module.named_parameters(/*recurse=*/true)) scan("parameter", np.name, np.value);
  for (const auto& nb : module.named_buffers(/*recurse=*/true)) scan("buffer", nb.name, nb.value);
  return found.empty() ? "the parameters and inputs are finite, so the model's arithmetic overflows (log of 0, exp "
                         "of a large value, division by 0?)"
                       : found;
}

}  // namespace

torch::Tensor Problem::Impl::loss_of(const MicroBatch& batch) const {
  std::vector<c10::IValue> args(batch.inputs.begin(), batch.inputs.end());
  if (loss == LossKind::none && batch.targets.defined() &&
      static_cast<int64_t>(args.size()) < forward_arity)
    args.emplace_back(batch.targets);
  c10::IValue out;
  try {
    out = const_cast<torch::jit::Module&>(module).forward(args);
  } catch (const std::exception& e) {
    std::string shapes;
    for (const auto& t : batch.inputs) shapes += (shapes.empty() ? "" : ", ") + shape_of(t);
    throw InputError("model forward failed on inputs of shape " + (shapes.empty() ? "()" : shapes) +
                     (spec.data.empty() ? "" : " from data file '" + spec.data + "'") + ": " +
                     torch_message(e));
  }
  if (!out.isTensor())
    throw InputError("model forward returned a " + out.tagKind() +
                     "; dhess needs one tensor (the model output, or the loss with --loss none)");
  torch::Tensor y = out.toTensor();
  torch::Tensor value;
  const std::string data = "data file '" + spec.data + "'";
  switch (loss) {
    case LossKind::none:
      if (y.numel() != 1)
        throw InputError("--loss none: model forward returned shape " + shape_of(y) + ", not a scalar loss");
      value = y.reshape({});
      break;
    case LossKind::cross_entropy:
    case LossKind::nll: {
      const torch::Tensor& t = batch.targets;
      if (t.is_floating_point()) {
        if (loss == LossKind::nll)
          throw InputError("--loss nll needs integer class targets; " + data + " has " +
                           std::string(c10::toString(t.scalar_type())) + " targets");
        if (y.sizes() != t.sizes())
          throw InputError("--loss cross_entropy with probability targets: model output shape " + shape_of(y) +
                           " does not match targets shape " + shape_of(t));
      } else {
        if (y.dim() < 2 || y.size(0) != t.size(0) || t.dim() != y.dim() - 1)
          throw InputError(std::string("--loss ") + dhess::loss_name(loss) + ": model output shape " + shape_of(y) +
                           " does not fit class targets of shape " + shape_of(t) + " (expected output [N, C, ...])");
        int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
        if (lo < 0 || hi >= y.size(1))
          throw InputError("targets of " + data + " hold class " + std::to_string(lo < 0 ? lo : hi) +
                           " but the model outputs " + std::to_string(y.size(1)) + " classes (output shape " +
                           shape_of(y) + ")");
      }
      value = loss == LossKind::nll ? at::nll_loss(y, t) : at::cross_entropy_loss(y, t);
      break;
    }
    case LossKind::mse:
    case LossKind::bce_with_logits:
      // torch would broadcast mismatched shapes with only a warning: a classic silent bug.
      if (y.sizes() != batch.targets.sizes())
        throw InputError(std::string("--loss ") + dhess::loss_name(loss) + ": model output shape " + shape_of(y) +
                         " does not match targets shape " + shape_of(batch.targets) + " from " + data);
      value = loss == LossKind::mse ? at::mse_loss(y, batch.targets)
                                    : at::binary_cross_entropy_with_logits(y, batch.targets);
      break;
  }
  return value * batch.weight;
}

std::vector<torch::Tensor> Problem::Impl::gradient_graph(const MicroBatch& batch) const {
  torch::Tensor value = loss_of(batch);
  if (!value.requires_grad())
    throw InputError("the loss does not depend on any selected parameter (check --params and the model)");
  return torch::autograd::grad({value}, params, {}, /*retain_graph=*/true, /*create_graph=*/true,
                               /*allow_unused=*/true);
}

Problem::Problem(const ProblemSpec& spec) : impl_(std::make_unique<Impl>()) {
  Impl& p = *impl_;
  p.spec = spec;
  p.scalar_type = spec.dtype == Dtype::float64 ? torch::kFloat64 : torch::kFloat32;
  try {
    p.device = torch::Device(spec.device);
  } catch (const std::exception& e) {
    throw UsageError("--device '" + spec.device + "' is not a torch device: " + torch_message(e));
  }

  std::vector<torch::Tensor> inputs;
  torch::Tensor targets;
  if (is_builtin(spec.model)) {
    BuiltinProblem b = make_builtin(spec.model);
    if (!spec.data.empty()) throw UsageError("--data cannot be combined with the built-in model " + spec.model);
    p.module = b.module;
    p.description = b.description;
    p.loss = spec.loss.empty() ? b.loss : parse_loss(spec.loss);
    inputs = {b.inputs};
    targets = b.targets;
  } else {
    if (spec.model.empty()) throw UsageError("--model is required (a TorchScript file or builtin:NAME)");
    if (spec.loss.empty())
      throw UsageError("--loss is required with --model " + spec.model +
                       " (cross_entropy, mse, nll, bce_with_logits, or none if forward returns the loss)");
    p.loss = parse_loss(spec.loss);
    p.module = load_model(spec.model);
    p.description = "TorchScript model '" + spec.model + "'";
    if (spec.data.empty()) {
      if (p.loss != LossKind::none)
        throw UsageError("--data is required with --loss " + spec.loss + " (only --loss none runs without data)");
    } else {
      std::tie(inputs, targets) = parse_data(load_pickle(spec.data), spec.data, p.loss);
    }
  }
  if (!p.module.find_method("forward"))
    throw InputError("model '" + spec.model + "' has no forward() method");
  int64_t total_arity = 0;
  int64_t required = required_arity(p.module, &total_arity);
  p.forward_arity = total_arity;

  // Parameters, in named_parameters() order, filtered by --params.
  std::regex pattern;
  try {
    pattern = std::regex(spec.params_regex.empty() ? ".*" : spec.params_regex);
  } catch (const std::regex_error& e) {
    throw UsageError("--params '" + spec.params_regex + "' is not a valid regular expression: " + e.what());
  }
  p.module.to(p.device);
  p.module.to(p.scalar_type);
  std::vector<std::string> all_names;
  for (const auto& np : p.module.named_parameters(/*recurse=*/true)) {
    all_names.push_back(np.name);
    torch::Tensor t = np.value;
    if (!t.is_floating_point()) continue;
    bool keep = std::regex_search(np.name, pattern);
    t.requires_grad_(keep);
    if (!keep) continue;
    p.params.push_back(t);
    p.layout.add(np.name, t.sizes().vec());
  }
  if (all_names.empty()) throw InputError("model '" + spec.model + "' has no parameters");
  if (p.params.empty()) {
    std::string names;
    for (std::size_t i = 0; i < all_names.size() && i < 8; ++i) names += (i ? ", " : "") + all_names[i];
    if (all_names.size() > 8) names += ", ...";
    throw UsageError("--params '" + spec.params_regex + "' matches no parameter of the model (" + names + ")");
  }
  spec.train_mode ? p.module.train() : p.module.eval();

  // Data: move, convert, validate, split into micro-batches.
  const std::string data = spec.data.empty() ? std::string("built-in data") : "data file '" + spec.data + "'";
  for (auto& t : inputs) {
    require_finite(t, "inputs of " + data);
    if (t.is_floating_point() && t.scalar_type() != p.scalar_type) {
      t = t.to(p.scalar_type);
      require_finite(t, "inputs of " + data + " converted to --dtype " + dtype_name(spec.dtype));
    }
    t = t.to(p.device);
  }
  if (targets.defined()) {
    require_finite(targets, "targets of " + data);
    bool classes = p.loss == LossKind::cross_entropy || p.loss == LossKind::nll;
    if (targets.scalar_type() == torch::kBool && classes)
      throw InputError(data + ": boolean targets cannot be class indices for --loss " + spec.loss);
    if (classes && !targets.is_floating_point())
      targets = targets.to(torch::kLong);
    else
      targets = targets.to(p.scalar_type);
    targets = targets.to(p.device);
  }
  int64_t given = static_cast<int64_t>(inputs.size());
  int64_t passed = given + (p.loss == LossKind::none && targets.defined() && given < total_arity ? 1 : 0);
  if (passed < required || given > total_arity)
    throw InputError("model forward() takes " + std::to_string(total_arity) + " argument(s) but " + data +
                     " gives " + std::to_string(given) + " input tensor(s)");

  if (inputs.empty()) {
    p.num_samples = 1;
  } else {
    for (const auto& t : inputs)
      if (t.dim() == 0) throw InputError(data + ": inputs must have a batch dimension, found a scalar");
    p.num_samples = inputs[0].size(0);
    for (const auto& t : inputs)
      if (t.size(0) != p.num_samples)
        throw InputError(data + ": input tensors disagree on the number of samples (" + shape_of(inputs[0]) +
                         " vs " + shape_of(t) + ")");
    if (targets.defined() && (targets.dim() == 0 || targets.size(0) != p.num_samples))
      throw InputError(data + ": targets of shape " + shape_of(targets) + " do not match " +
                       std::to_string(p.num_samples) + " input samples");
    if (p.num_samples == 0) throw InputError(data + " holds no samples");
    if (spec.batch_size < 0) throw UsageError("--batch-size must be positive");
  }
  p.all_inputs = inputs;
  p.all_targets = targets;
  p.split(0, p.num_samples);
}

Problem::~Problem() = default;
Problem::Problem(Problem&&) noexcept = default;
Problem& Problem::operator=(Problem&&) noexcept = default;

const ProblemSpec& Problem::spec() const { return impl_->spec; }
const ParameterLayout& Problem::layout() const { return impl_->layout; }
int64_t Problem::num_samples() const { return impl_->num_samples; }
int64_t Problem::num_micro_batches() const { return static_cast<int64_t>(impl_->batches.size()); }
std::string Problem::loss_name() const { return dhess::loss_name(impl_->loss); }
std::string Problem::description() const { return impl_->description; }

void Problem::Impl::split(int64_t begin, int64_t end) {
  batches.clear();
  if (all_inputs.empty()) {  // --loss none without data: one term, on the first shard only
    if (begin == 0) batches.push_back({{}, all_targets, 1.0});
    return;
  }
  const int64_t b = spec.batch_size > 0 ? spec.batch_size : std::max<int64_t>(end - begin, 1);
  for (int64_t s = begin; s < end; s += b) {
    const int64_t len = std::min(b, end - s);
    MicroBatch mb;
    for (const auto& t : all_inputs) mb.inputs.push_back(t.narrow(0, s, len));
    if (all_targets.defined()) mb.targets = all_targets.narrow(0, s, len);
    mb.weight = static_cast<double>(len) / static_cast<double>(num_samples);
    batches.push_back(std::move(mb));
  }
}

void Problem::keep_shard(int rank, int size) {
  const int64_t n = impl_->all_inputs.empty() ? 1 : impl_->num_samples;
  impl_->split(n * rank / size, n * (rank + 1) / size);
}

ProblemCheck Problem::check() {
  Impl& p = *impl_;
  ProblemCheck result;
  std::vector<torch::Tensor> total(p.params.size()), curvature(p.params.size());
  for (const auto& batch : p.batches) {
    torch::Tensor value = p.loss_of(batch);
    double v = value.item<double>();
    if (!std::isfinite(v))
      throw InputError("the loss is " + std::to_string(v) + " at the model's parameters" +
                       (p.spec.data.empty() ? "" : " on data file '" + p.spec.data + "'") + "; " +
                       nonfinite_state(p.module));
    result.loss += v;
    if (!value.requires_grad())
      throw InputError("the loss does not depend on any selected parameter (check --params and the model)");
    auto grads = torch::autograd::grad({value}, p.params, {}, /*retain_graph=*/true, /*create_graph=*/true,
                                       /*allow_unused=*/true);
    // One Hessian-vector product H·1 along the same graph: a NaN or Inf anywhere in a
    // row of H shows up in it, before the eigensolver would choke on it.
    std::vector<torch::Tensor> outputs, ones;
    for (std::size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i].defined()) continue;
      total[i] = total[i].defined() ? total[i] + grads[i].detach() : grads[i].detach();
      if (grads[i].requires_grad()) outputs.push_back(grads[i]), ones.push_back(torch::ones_like(grads[i]));
    }
    if (outputs.empty()) continue;
    std::vector<torch::Tensor> hv;
    try {
      hv = torch::autograd::grad(outputs, p.params, ones, /*retain_graph=*/false, /*create_graph=*/false,
                                 /*allow_unused=*/true);
    } catch (const c10::Error& e) {
      throw InputError("the model has no second derivative (torch cannot differentiate its gradient): " +
                       torch_message(e));
    }
    for (std::size_t i = 0; i < hv.size(); ++i)
      if (hv[i].defined()) curvature[i] = curvature[i].defined() ? curvature[i] + hv[i] : hv[i];
  }
  double sq = 0;
  for (std::size_t i = 0; i < total.size(); ++i) {
    const auto& info = p.layout.parameters()[i];
    if (!total[i].defined()) {
      result.unused_parameters.push_back(info.name);
      continue;
    }
    double s = total[i].to(torch::kFloat64).pow(2).sum().item<double>();
    if (!std::isfinite(s)) {
      auto bad = (~torch::isfinite(total[i])).sum().item<int64_t>();
      throw InputError("the gradient of parameter '" + info.name + "' " + shape_string(info.shape) + " has " +
                       (bad > 0 ? std::to_string(bad) + " NaN or Inf entries" : std::string("an overflowing norm")) +
                       " although the loss " + std::to_string(result.loss) +
                       " is finite: the model is not differentiable at these parameters (sqrt or log of 0?)");
    }
    sq += s;
  }
  for (std::size_t i = 0; i < curvature.size(); ++i) {
    if (!curvature[i].defined()) continue;
    auto bad = (~torch::isfinite(curvature[i])).sum().item<int64_t>();
    if (bad == 0) continue;
    const auto& info = p.layout.parameters()[i];
    throw InputError("the Hessian has NaN or Inf entries in " + std::to_string(bad) + " row(s) of parameter '" +
                     info.name + "' " + shape_string(info.shape) + " although the loss " +
                     std::to_string(result.loss) + " and its gradient are finite: the loss is not twice "
                     "differentiable at these parameters (|w|^1.5 or sqrt at 0?)");
  }
  result.gradient_norm = std::sqrt(sq);
  return result;
}

void Problem::export_to(const std::string& model_path, const std::string& data_path) const {
  const Impl& p = *impl_;
  auto module = p.module.clone();
  module.to(torch::kCPU);
  module.save(model_path);
  std::vector<torch::Tensor> inputs;
  for (const auto& t : p.all_inputs) inputs.push_back(t.cpu());
  const torch::Tensor targets = p.all_targets.defined() ? p.all_targets.cpu() : torch::Tensor();
  c10::IValue in = inputs.size() == 1 ? c10::IValue(inputs[0])
                                      : c10::IValue(c10::ivalue::Tuple::create(
                                            std::vector<c10::IValue>(inputs.begin(), inputs.end())));
  auto bytes = torch::jit::pickle_save(c10::ivalue::Tuple::create({in, c10::IValue(targets)}));
  std::ofstream out(data_path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw ResourceError("cannot write data file '" + data_path + "'");
}

}  // namespace dhess
