// Problem: the model, the data and the loss put together (model.cpp, data.cpp, loss.cpp), and
// the one gradient pass that checks them before any Hessian-vector product.
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "dhess/core/errors.hpp"
#include "dhess/core/memory.hpp"
#include "problem_impl.hpp"

namespace dhess {
namespace fs = std::filesystem;

std::string shape_of(const torch::Tensor& t) { return shape_string(t.sizes().vec()); }

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

InputError no_second_derivative(const std::exception& e) {
  return InputError("the model has no second derivative here: " + torch_message(e) +
                    " (torch differentiates that op once, not twice); rewrite it with operations torch can "
                    "differentiate twice, or select with --params only parameters that act after it in forward");
}

InputError no_derivative(const std::exception& e) {
  const std::string message = torch_message(e);
  // Eval-mode Transformer layers and MultiheadAttention run a fused kernel whenever no gradient is
  // needed; a model traced under torch.no_grad() records it, and nothing can differentiate it.
  static const std::regex fast_path(
      R"(_transformer_encoder_layer_fwd|_native_multi_head_attention|_transformer_decoder)");
  if (std::regex_search(message, fast_path))
    return InputError("the model has no derivative: " + message +
                      " (the fused inference path of an eval-mode Transformer layer, recorded by tracing without "
                      "gradients, e.g. under torch.no_grad()); export it with torch.jit.script, or trace it with "
                      "gradients on and torch.backends.mha.set_fastpath_enabled(False)");
  return InputError("the model has no derivative here: " + message +
                    "; rewrite that op with operations torch can differentiate");
}

void require_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(what + " file '" + path + "' does not exist");
  if (fs::is_directory(path, ec)) throw InputError(what + " file '" + path + "' is a directory");
  if (fs::file_size(path, ec) == 0) throw InputError(what + " file '" + path + "' is empty");
  std::ifstream probe(path, std::ios::binary);
  if (!probe) throw InputError(what + " file '" + path + "' cannot be read (permissions?)");
}

namespace {

// The module, its description and the loss; the samples of a built-in or of --data.
Samples load_model_and_samples(Problem::Impl& p) {
  const ProblemSpec& spec = p.spec;
  if (is_builtin(spec.model)) {
    if (!spec.data.empty()) throw UsageError("--data cannot be combined with the built-in model " + spec.model);
    BuiltinProblem b = make_builtin(spec.model);
    p.module = b.module;
    p.description = b.description;
    p.loss = spec.loss.value_or(b.loss);
    return {{b.inputs}, b.targets};
  }
  if (spec.model.empty()) throw UsageError("--model is required (a TorchScript file or builtin:NAME)");
  if (!spec.loss)
    throw UsageError("--loss is required with --model " + spec.model +
                     " (cross_entropy, mse, nll, bce_with_logits, or none if forward returns the loss)");
  p.loss = *spec.loss;
  p.module = load_model(spec.model);
  p.description = "TorchScript model '" + spec.model + "'";
  if (!spec.data.empty()) return load_samples(spec.data, p.loss);
  if (p.loss != Loss::none)
    throw UsageError(std::string("--data is required with --loss ") + loss_name(p.loss) +
                     " (only --loss none runs without data)");
  return {};
}

// The gradient of every micro-batch's loss, summed, and H·1 along the same graphs: a NaN or Inf
// anywhere in a row of H shows up in H·1 before the eigensolver would choke on it.
struct FirstPass {
  double loss = 0;
  std::vector<torch::Tensor> gradient, curvature;  // per parameter; undefined where unused
  std::unique_ptr<CurvatureGraph> graph;           // the graph, where there is one micro-batch
};

void accumulate(std::vector<torch::Tensor>& sum, std::size_t i, const torch::Tensor& part) {
  sum[i] = sum[i].defined() ? sum[i] + part : part;
}

// C·1 along a micro-batch's curvature graph, per parameter (undefined where C's rows are zero): a
// NaN or Inf anywhere in a row of C shows up in it before the eigensolver would choke on it.
std::vector<torch::Tensor> product_with_ones(const Problem::Impl& p, const CurvatureGraph& graph) {
  std::vector<torch::Tensor> ones;
  for (const auto& t : p.params) ones.push_back(torch::ones_like(t));
  try {
    return graph.product(ones);
  } catch (const c10::Error& e) {
    throw no_second_derivative(e);
  } catch (const std::runtime_error& e) {  // autograd's NotImplemented node throws these
    throw no_second_derivative(e);
  }
}

FirstPass first_pass(const Problem::Impl& p) {
  FirstPass pass{0, std::vector<torch::Tensor>(p.params.size()), std::vector<torch::Tensor>(p.params.size()), {}};
  for (const auto& batch : p.batches) {
    std::unique_ptr<CurvatureGraph> graph = p.curvature_graph(batch);
    const double v = graph->loss().item<double>();
    if (!std::isfinite(v))
      throw InputError("the loss is " + std::to_string(v) + " at the model's parameters" +
                       (p.spec.data.empty() ? "" : " on data file '" + p.spec.data + "'") + "; " +
                       nonfinite_state(p.module));
    pass.loss += v;
    const std::vector<torch::Tensor> grads = graph->gradient();
    for (std::size_t i = 0; i < grads.size(); ++i)
      if (grads[i].defined()) accumulate(pass.gradient, i, grads[i]);
    const std::vector<torch::Tensor> cv = product_with_ones(p, *graph);
    for (std::size_t i = 0; i < cv.size(); ++i)
      if (cv[i].defined()) accumulate(pass.curvature, i, cv[i]);
    if (p.batches.size() == 1) pass.graph = std::move(graph);
  }
  return pass;
}

// The gradient of parameter i as contiguous doubles on the CPU, refused when not finite.
torch::Tensor finite_gradient(const ParameterInfo& info, const torch::Tensor& g, double loss) {
  const torch::Tensor d = g.to(torch::kCPU, torch::kFloat64).contiguous();
  if (std::isfinite(d.pow(2).sum().item<double>())) return d;
  const auto bad = (~torch::isfinite(g)).sum().item<int64_t>();
  throw InputError("the gradient of parameter '" + info.name + "' " + shape_string(info.shape) + " has " +
                   (bad > 0 ? std::to_string(bad) + " NaN or Inf entries" : std::string("an overflowing norm")) +
                   " although the loss " + std::to_string(loss) +
                   " is finite: the model is not differentiable at these parameters (sqrt or log of 0?)");
}

void require_finite_curvature(Curvature curvature, const ParameterInfo& info, const torch::Tensor& hv, double loss) {
  if (!hv.defined()) return;
  const auto bad = (~torch::isfinite(hv)).sum().item<int64_t>();
  if (bad == 0) return;
  throw InputError(std::string("the ") + curvature_title(curvature) + " has NaN or Inf entries in " +
                   std::to_string(bad) + " row(s) of parameter '" + info.name + "' " + shape_string(info.shape) +
                   " although the loss " + std::to_string(loss) +
                   " and its gradient are finite: the loss is not twice differentiable at these parameters "
                   "(|w|^1.5 or sqrt at 0?)");
}

// Every op of the model differentiated twice by its own autograd formula, as eager PyTorch's
// double backward differentiates it, in the run's precision.
void use_twice_differentiable_kernels() {
  // After its profiling runs TorchScript's graph executor would differentiate its own optimized
  // graph with its own derivative formulas (autodiff subgraphs): H then differs from the eager
  // model's by about 1e-9 relative (a LayerNorm after an Embedding, measured). Interpreted as
  // written, every op is differentiated by its own autograd formula, as in eager mode.
  torch::jit::setGraphExecutorOptimize(false);
  // scaled_dot_product_attention picks a fused kernel (flash or memory-efficient; cuDNN on GPUs)
  // whose backward has no derivative: the second pass fails with "derivative for
  // aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented". Its math
  // backend is matmuls and a softmax, differentiated twice like the rest of the model.
  auto& context = at::globalContext();
  context.setSDPUseFlash(false);
  context.setSDPUseMemEfficient(false);
  context.setSDPUseCuDNN(false);
  // cuDNN convolutions and cuBLAS may round float32 operands to TF32 (10-bit mantissa): a float32
  // run computes in float32.
  context.setAllowTF32CuDNN(false);
  context.setAllowTF32CuBLAS(false);
}

}  // namespace

Problem::Problem(const ProblemSpec& spec) : impl_(std::make_unique<Impl>()) {
  use_twice_differentiable_kernels();
  Impl& p = *impl_;
  p.spec = spec;
  p.scalar_type = spec.dtype == Dtype::float64 ? torch::kFloat64 : torch::kFloat32;
  p.device = torch::Device(spec.device);
  Samples samples = load_model_and_samples(p);
  if (p.loss == Loss::none && spec.curvature != Curvature::hessian)
    throw UsageError(std::string("--curvature ") + curvature_name(spec.curvature) +
                     " needs the model's outputs and a loss dhess computes from them, but with --loss none forward "
                     "returns the loss itself: no outputs to linearize (ggn) and no terms of the loss (ef); return "
                     "the outputs and give --loss cross_entropy, mse, nll or bce_with_logits");
  const ForwardArity arity = forward_arity(p.module, spec.model);
  p.forward_arity = arity.total;
  select_parameters(p);
  spec.train_mode ? p.module.train() : p.module.eval();
  place_samples(p, std::move(samples), arity);
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

ProblemCheck Problem::check() {
  Impl& p = *impl_;
  FirstPass pass = first_pass(p);
  ProblemCheck result;
  result.loss = pass.loss;
  result.gradient.assign(static_cast<std::size_t>(p.layout.n()), 0.0);
  for (std::size_t i = 0; i < p.params.size(); ++i) {
    const auto& info = p.layout.parameters()[i];
    if (!pass.gradient[i].defined()) {
      result.unused_parameters.push_back(info.name);
      continue;
    }
    const torch::Tensor g = finite_gradient(info, pass.gradient[i], pass.loss);
    std::copy_n(g.data_ptr<double>(), g.numel(), result.gradient.begin() + info.offset);
  }
  for (std::size_t i = 0; i < p.params.size(); ++i)
    require_finite_curvature(p.spec.curvature, p.layout.parameters()[i], pass.curvature[i], pass.loss);
  p.first_graph = std::move(pass.graph);
  return result;
}

int64_t Problem::largest_micro_batch() const {
  int64_t most = 0;
  for (const auto& batch : impl_->batches)
    if (!batch.inputs.empty()) most = std::max(most, batch.inputs[0].size(0));
  return most;
}

double Problem::pass_memory(int64_t samples) const {
  const Impl& p = *impl_;
  const MicroBatch batch = p.slice(0, std::min(samples, p.num_samples));
  return std::max(0.0, peak_bytes_of([&] { product_with_ones(p, *p.curvature_graph(batch)); }));
}

void Problem::export_to(const std::string& model_path, const std::string& data_path) const {
  const Impl& p = *impl_;
  auto module = p.module.clone();
  module.to(torch::kCPU);
  module.save(model_path);
  std::vector<torch::Tensor> inputs;
  for (const auto& t : p.all_inputs) inputs.push_back(t.cpu());
  const torch::Tensor targets = p.all_targets.defined() ? p.all_targets.cpu() : torch::Tensor();
  c10::IValue in =
      inputs.size() == 1
          ? c10::IValue(inputs[0])
          : c10::IValue(c10::ivalue::Tuple::create(std::vector<c10::IValue>(inputs.begin(), inputs.end())));
  auto bytes = torch::jit::pickle_save(c10::ivalue::Tuple::create({in, c10::IValue(targets)}));
  std::ofstream out(data_path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw ResourceError("cannot write data file '" + data_path + "'");
}

}  // namespace dhess
