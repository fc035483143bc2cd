#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
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

bool same_view(const torch::Tensor& a, const torch::Tensor& b) {
  return a.storage().unsafeGetStorageImpl() == b.storage().unsafeGetStorageImpl() &&
         a.storage_offset() == b.storage_offset() && a.sizes() == b.sizes() && a.strides() == b.strides() &&
         a.scalar_type() == b.scalar_type();
}

// Storage offsets of every element of `t`, ascending.
std::vector<int64_t> storage_elements(const torch::Tensor& t) {
  std::vector<int64_t> offsets{t.storage_offset()};
  for (int64_t d = 0; d < t.dim(); ++d) {
    std::vector<int64_t> next;
    next.reserve(offsets.size() * static_cast<std::size_t>(t.size(d)));
    for (int64_t base : offsets)
      for (int64_t i = 0; i < t.size(d); ++i) next.push_back(base + i * t.stride(d));
    offsets = std::move(next);
  }
  std::sort(offsets.begin(), offsets.end());
  return offsets;
}

// Number of storage elements `a` and `b` share (0 for distinct storages).
int64_t shared_elements(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.storage().unsafeGetStorageImpl() != b.storage().unsafeGetStorageImpl() || a.numel() == 0 || b.numel() == 0)
    return 0;
  auto span = [](const torch::Tensor& t) {
    int64_t last = t.storage_offset();
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * std::abs(t.stride(d));
    return std::make_pair(t.storage_offset(), last);
  };
  auto [a0, a1] = span(a);
  auto [b0, b1] = span(b);
  if (a1 < b0 || b1 < a0) return 0;
  std::vector<int64_t> ea = storage_elements(a), eb = storage_elements(b), common;
  std::set_intersection(ea.begin(), ea.end(), eb.begin(), eb.end(), std::back_inserter(common));
  return static_cast<int64_t>(common.size());
}

}  // namespace

std::vector<SharedTensor> distinct_parameters(const torch::jit::Module& module) {
  std::vector<SharedTensor> out;
  for (const auto& np : module.named_parameters(/*recurse=*/true)) {
    auto same = std::find_if(out.begin(), out.end(), [&](const SharedTensor& s) { return same_view(s.tensor, np.value); });
    if (same != out.end()) {
      same->names.push_back(np.name);
      continue;
    }
    for (const auto& other : out) {
      const int64_t common = shared_elements(other.tensor, np.value);
      if (common > 0)
        throw InputError("parameter '" + np.name + "' " + shape_of(np.value) + " shares " + std::to_string(common) +
                         " of its elements with parameter '" + other.names.front() + "' " + shape_of(other.tensor) +
                         " but is not the same tensor (a view of part of it): dhess ties whole tensors only; make '" +
                         np.name + "' a tensor of its own (.clone()) or tie the whole tensor");
    }
    out.push_back({{np.name}, np.value});
  }
  return out;
}

namespace {

// Points every alias of a tied tensor at the first name's (converted) tensor, so the loss sees one
// variable however the module was loaded and converted.
void retie(torch::jit::Module& root, std::vector<SharedTensor>& tensors) {
  std::map<std::string, torch::Tensor> current;
  for (const auto& np : root.named_parameters(/*recurse=*/true)) current.emplace(np.name, np.value);
  for (auto& shared : tensors) {
    shared.tensor = current.at(shared.names.front());
    for (std::size_t a = 1; a < shared.names.size(); ++a) {
      const std::string& dotted = shared.names[a];
      torch::jit::Module owner = root;
      std::size_t start = 0;
      for (std::size_t dot; (dot = dotted.find('.', start)) != std::string::npos; start = dot + 1)
        owner = owner.attr(dotted.substr(start, dot - start)).toModule();
      owner.setattr(dotted.substr(start), shared.tensor);
    }
  }
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

  // Parameters, in named_parameters() order, each tensor once, filtered by --params.
  std::regex pattern;
  try {
    pattern = std::regex(spec.params_regex.empty() ? ".*" : spec.params_regex);
  } catch (const std::regex_error& e) {
    throw UsageError("--params '" + spec.params_regex + "' is not a valid regular expression: " + e.what());
  }
  // Ties are found on the tensors as loaded: converting each name separately could untie them.
  std::vector<SharedTensor> tensors = distinct_parameters(p.module);
  p.module.to(p.device);
  p.module.to(p.scalar_type);
  retie(p.module, tensors);
  std::vector<std::string> all_names;
  for (auto& shared : tensors) {
    all_names.insert(all_names.end(), shared.names.begin(), shared.names.end());
    torch::Tensor& t = shared.tensor;
    if (!t.is_floating_point()) continue;
    bool keep = std::any_of(shared.names.begin(), shared.names.end(),
                            [&](const std::string& name) { return std::regex_search(name, pattern); });
    t.requires_grad_(keep);
    if (!keep) continue;
    p.params.push_back(t);
    p.layout.add(shared.names.front(), t.sizes().vec(),
                 std::vector<std::string>(shared.names.begin() + 1, shared.names.end()));
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
    else if (targets.is_floating_point() || p.loss != LossKind::none)  // forward's own labels stay integers
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

MicroBatch Problem::Impl::slice(int64_t begin, int64_t end) const {
  MicroBatch mb;
  for (const auto& t : all_inputs) mb.inputs.push_back(t.narrow(0, begin, end - begin));
  if (all_targets.defined()) mb.targets = all_targets.narrow(0, begin, end - begin);
  mb.weight = static_cast<double>(end - begin) / static_cast<double>(num_samples);
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
  for (const auto& [s, e] : pieces(begin, end)) batches.push_back(slice(s, e));
}

void Problem::keep_shard(int rank, int size) {
  const int64_t n = impl_->all_inputs.empty() ? 1 : impl_->num_samples;
  impl_->split(n * rank / size, n * (rank + 1) / size);
}

namespace {

bool has_batch_norm(const torch::jit::Module& module) {
  for (const auto& m : module.named_modules()) {
    const auto type = m.value.type()->name();
    if (type && type->name().find("BatchNorm") != std::string::npos) return true;
  }
  return false;
}

}  // namespace

void Problem::require_separable(int shards) const {
  const Impl& p = *impl_;
  if (p.all_inputs.empty()) return;
  // The first two pieces of the split this run makes: adjacent, so together they are one slice.
  std::vector<std::pair<int64_t, int64_t>> first;
  for (int s = 0; s < shards && first.size() < 2; ++s)
    for (const auto& piece : p.pieces(p.num_samples * s / shards, p.num_samples * (s + 1) / shards))
      if (first.size() < 2) first.push_back(piece);
  if (first.size() < 2) return;
  const auto [a0, a1] = first[0];
  const auto [b0, b1] = first[1];
  torch::NoGradGuard no_grad;
  auto mean_loss = [&](int64_t begin, int64_t end) {
    MicroBatch mb = p.slice(begin, end);
    mb.weight = 1;
    return p.loss_of(mb).item<double>();
  };
  const double a = mean_loss(a0, a1), again = mean_loss(a0, a1), b = mean_loss(b0, b1), together = mean_loss(a0, b1);
  const double apart = (static_cast<double>(a1 - a0) * a + static_cast<double>(b1 - b0) * b) /
                       static_cast<double>(b1 - a0);
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
                      : p.loss == LossKind::none ? "with --loss none, forward must return the mean loss over its samples"
                                                 : "the model's forward mixes samples";
  throw UsageError("the samples are coupled: the loss of samples [" + std::to_string(a0) + ", " + std::to_string(b1) +
                   ") evaluated together is " + std::to_string(together) + " but " + std::to_string(apart) +
                   " as the weighted mean of [" + std::to_string(a0) + ", " + std::to_string(a1) + ") and [" +
                   std::to_string(b0) + ", " + std::to_string(b1) + ") evaluated apart, so " + split +
                   " would give the Hessian of a different loss (" + cause + "); " +
                   (p.spec.train_mode ? "run in eval mode (drop --train-mode), or " : "") + fix);
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
