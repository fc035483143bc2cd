// The model: a TorchScript module loaded from a file, its forward() signature, and its
// parameters -- each tensor once, however many names it has -- moved to the run's device and dtype.
#include <algorithm>
#include <iterator>
#include <map>

#include "dhess/core/errors.hpp"
#include "problem_impl.hpp"

namespace dhess {
namespace {

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

// The names of every parameter, for a message: the first eight.
std::string some_names(const std::vector<SharedTensor>& tensors) {
  std::vector<std::string> names;
  for (const auto& t : tensors) names.insert(names.end(), t.names.begin(), t.names.end());
  std::string text;
  for (std::size_t i = 0; i < names.size() && i < 8; ++i) text += (i ? ", " : "") + names[i];
  return names.size() > 8 ? text + ", ..." : text;
}

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

torch::jit::Module load_model(const std::string& path) {
  require_file(path, "model");
  try {
    return torch::jit::load(path);
  } catch (const std::exception& e) {
    throw InputError(
        "model file '" + path +
        "' is not a TorchScript archive (save it with torch.jit.script(m).save(path)): " + torch_message(e));
  }
}

ForwardArity forward_arity(const torch::jit::Module& module, const std::string& model) {
  if (!module.find_method("forward")) throw InputError("model '" + model + "' has no forward() method");
  const auto& arguments = module.get_method("forward").function().getSchema().arguments();
  ForwardArity arity;
  arity.total = static_cast<int64_t>(arguments.size()) - 1;  // without self
  for (std::size_t i = 1; i < arguments.size(); ++i)
    if (!arguments[i].default_value()) ++arity.required;
  return arity;
}

std::vector<SharedTensor> distinct_parameters(const torch::jit::Module& module) {
  std::vector<SharedTensor> out;
  for (const auto& np : module.named_parameters(/*recurse=*/true)) {
    auto same =
        std::find_if(out.begin(), out.end(), [&](const SharedTensor& s) { return same_view(s.tensor, np.value); });
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

void select_parameters(Problem::Impl& p) {
  // Ties are found on the tensors as loaded: converting each name separately could untie them.
  std::vector<SharedTensor> tensors = distinct_parameters(p.module);
  if (tensors.empty()) throw InputError("model '" + p.spec.model + "' has no parameters");
  p.module.to(p.device);
  p.module.to(p.scalar_type);
  retie(p.module, tensors);
  auto selected = [&](const std::string& name) { return !p.spec.params || std::regex_search(name, *p.spec.params); };
  for (auto& shared : tensors) {
    torch::Tensor& t = shared.tensor;
    if (!t.is_floating_point()) continue;
    const bool frozen = !t.requires_grad();
    const bool keep = std::any_of(shared.names.begin(), shared.names.end(), selected);
    t.requires_grad_(keep);
    if (!keep) continue;
    p.params.push_back(t);
    p.layout.add(shared.names.front(), t.sizes().vec(),
                 std::vector<std::string>(shared.names.begin() + 1, shared.names.end()), frozen);
  }
  if (p.params.empty())
    throw UsageError("--params '" + p.spec.params_text + "' matches no parameter of the model (" + some_names(tensors) +
                     ")");
}

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

}  // namespace dhess
