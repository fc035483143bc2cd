// Loading and running the AOTInductor packages of `dhess compile`. A package's inputs are the
// flattened arguments of the compiled function (parameters, micro-batch inputs, targets, weight,
// vectors), its outputs the product per parameter, [width, *shape] each.
#include "compiled.hpp"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/version.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "dhess/core/errors.hpp"

namespace dhess {

struct CompiledProduct::Package {
  std::string path;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  nlohmann::json inputs, targets;  // [{"shape": [...], "dtype": "float64"}, ...], and null or one
  bool verified = false;
};

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string dtype_text(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat64: return "float64";
    case torch::kFloat32: return "float32";
    case torch::kInt64: return "int64";
    case torch::kInt32: return "int32";
    case torch::kBool: return "bool";
    default: return c10::toString(t.scalar_type());
  }
}

bool matches(const json& described, const torch::Tensor& t) {
  return described.is_object() && described.at("shape").get<std::vector<int64_t>>() == t.sizes().vec() &&
         described.at("dtype").get<std::string>() == dtype_text(t);
}

std::string value_of(const std::unordered_map<std::string, std::string>& metadata, const std::string& key) {
  const auto it = metadata.find(key);
  return it == metadata.end() ? "" : it->second;
}

// Why a package does not fit the problem, or "" where it does.
std::string mismatch(const std::unordered_map<std::string, std::string>& m, const Problem::Impl& p) {
  if (value_of(m, "dhess.format") != "1") return "it was not written by dhess compile";
  const std::string torch_version = value_of(m, "dhess.torch");
  if (torch_version.substr(0, torch_version.find('+')) != TORCH_VERSION)
    return "it was compiled by torch " + torch_version + ", and this dhess runs torch " TORCH_VERSION;
  if (value_of(m, "dhess.curvature") != curvature_name(p.spec.curvature))
    return std::string("it computes products with the Hessian, and this run the ") + curvature_title(p.spec.curvature);
  if (value_of(m, "dhess.loss") != loss_name(p.loss))
    return "it was compiled for --loss " + value_of(m, "dhess.loss") + ", and this run has --loss " + loss_name(p.loss);
  const std::string dtype = p.scalar_type == torch::kFloat64 ? "float64" : "float32";
  if (value_of(m, "dhess.dtype") != dtype)
    return "it was compiled for " + value_of(m, "dhess.dtype") + ", not " + dtype;
  if (value_of(m, "dhess.train_mode") != (p.spec.train_mode ? "1" : "0"))
    return std::string("it was compiled in ") + (p.spec.train_mode ? "eval" : "train") + " mode";
  const std::string device = value_of(m, "AOTI_DEVICE_KEY");
  if (device != (p.device.is_cuda() ? "cuda" : "cpu"))
    return "it was compiled for " + device + ", and this rank runs on " + p.device.str();
  json expected = json::array();
  for (std::size_t i = 0; i < p.params.size(); ++i)
    expected.push_back({p.layout.parameters()[i].name, p.params[i].sizes().vec()});
  if (json::parse(value_of(m, "dhess.parameters"), nullptr, false) != expected)
    return "its parameters (names and shapes, in order) are not this run's (check --params and the model)";
  return "";
}

std::vector<fs::path> package_files(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError("--compiled '" + path + "' does not exist (write it with dhess compile)");
  if (!fs::is_directory(path, ec)) return {path};
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(path, ec))
    if (entry.path().extension() == ".pt2") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::unique_ptr<CompiledProduct> CompiledProduct::open(const std::string& path, const Problem::Impl& problem,
                                                       std::string& reason) {
  const auto files = package_files(path);
  if (files.empty()) {
    reason = "--compiled '" + path + "' holds no .pt2 package";
    return nullptr;
  }
  std::unique_ptr<CompiledProduct> compiled(new CompiledProduct(problem));
  for (const auto& file : files) {
    std::unordered_map<std::string, std::string> metadata;
    try {
      metadata = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(file.string(), "model");
    } catch (const std::exception& e) {
      reason = file.filename().string() + " is not an AOTInductor package: " + first_line(e.what());
      continue;
    }
    if (const std::string why = mismatch(metadata, problem); !why.empty()) {
      reason = file.filename().string() + " does not fit this run: " + why;
      continue;
    }
    auto package = std::make_unique<Package>();
    package->path = file.string();
    package->inputs = json::parse(value_of(metadata, "dhess.inputs"));
    package->targets = json::parse(value_of(metadata, "dhess.targets"));
    const int64_t width = std::stoll(value_of(metadata, "dhess.width"));
    if (compiled->width_ != 0 && width != compiled->width_) {
      reason = file.filename().string() + " has width " + std::to_string(width) + ", the others " +
               std::to_string(compiled->width_);
      continue;
    }
    const c10::DeviceIndex index = problem.device.is_cuda() ? problem.device.index() : -1;
    try {
      package->loader =
          std::make_unique<torch::inductor::AOTIModelPackageLoader>(package->path, "model", false, 1, index);
    } catch (const std::exception& e) {
      reason = file.filename().string() + " does not load: " + first_line(e.what());
      continue;
    }
    compiled->width_ = width;
    compiled->method_ = value_of(metadata, "dhess.method");
    compiled->packages_.push_back(std::move(package));
  }
  if (compiled->packages_.empty()) return nullptr;
  return compiled;
}

CompiledProduct::CompiledProduct(const Problem::Impl& problem) : p_(problem) {}
CompiledProduct::~CompiledProduct() = default;

CompiledProduct::Package* CompiledProduct::find(const MicroBatch& batch) {
  for (auto& package : packages_) {
    if (package->inputs.size() != batch.inputs.size()) continue;
    bool fits = batch.targets.defined() ? matches(package->targets, batch.targets) : package->targets.is_null();
    for (std::size_t i = 0; fits && i < batch.inputs.size(); ++i) fits = matches(package->inputs[i], batch.inputs[i]);
    if (fits) return package.get();
  }
  return nullptr;
}

std::vector<torch::Tensor> CompiledProduct::product(Package& package, const MicroBatch& batch,
                                                    const std::vector<torch::Tensor>& v, int64_t k) const {
  std::vector<torch::Tensor> fixed;  // everything but the vectors
  for (const auto& t : p_.params) fixed.push_back(t.detach().contiguous());
  for (const auto& t : batch.inputs) fixed.push_back(t.contiguous());
  if (batch.targets.defined()) fixed.push_back(batch.targets.contiguous());
  fixed.push_back(torch::tensor(batch.weight, torch::TensorOptions().dtype(p_.scalar_type).device(p_.device)));
  std::vector<std::vector<torch::Tensor>> chunks(v.size());
  for (int64_t c0 = 0; c0 < k; c0 += width_) {
    const int64_t kk = std::min(width_, k - c0);
    std::vector<torch::Tensor> inputs = fixed;
    for (const auto& t : v) {
      auto part = t.narrow(0, c0, kk);
      if (kk < width_) {
        auto shape = t.sizes().vec();
        shape[0] = width_;
        auto padded = torch::zeros(shape, t.options());
        padded.narrow(0, 0, kk).copy_(part);
        part = padded;
      }
      inputs.push_back(part.contiguous());
    }
    const auto out = package.loader->run(inputs);
    if (out.size() != v.size())
      throw InternalError(package.path + " returned " + std::to_string(out.size()) + " tensors for " +
                          std::to_string(v.size()) + " parameters");
    for (std::size_t i = 0; i < out.size(); ++i) chunks[i].push_back(out[i].narrow(0, 0, kk));
  }
  std::vector<torch::Tensor> result;
  for (auto& parts : chunks) result.push_back(parts.size() == 1 ? parts[0] : torch::cat(parts));
  return result;
}

std::string CompiledProduct::coverage(const std::vector<MicroBatch>& batches) {
  std::vector<Package*> used;
  std::string eager;
  int64_t missing = 0;
  for (const auto& batch : batches) {
    if (Package* package = find(batch)) {
      used.push_back(package);
    } else if (++missing == 1) {
      eager = std::to_string(batch.inputs.empty() ? 0 : batch.inputs[0].size(0)) + " samples";
    }
  }
  packages_.erase(
      std::remove_if(packages_.begin(), packages_.end(),
                     [&](const auto& p) { return std::find(used.begin(), used.end(), p.get()) == used.end(); }),
      packages_.end());
  if (missing == 0) return "";
  return std::to_string(missing) + " of " + std::to_string(batches.size()) + " micro-batches (" + eager +
         (missing > 1 ? ", ..." : "") + ") have no package of their shapes (dhess compile --ranks, --batch-size)";
}

bool& CompiledProduct::verified(Package& package) { return package.verified; }

void CompiledProduct::drop(Package& package) {
  packages_.erase(
      std::remove_if(packages_.begin(), packages_.end(), [&](const auto& p) { return p.get() == &package; }),
      packages_.end());
}

}  // namespace dhess
