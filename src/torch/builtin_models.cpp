// Built-in models for users without a TorchScript file. They are real
// TorchScript modules (compiled from source with Module::define), so they take
// exactly the path a user's exported model takes.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "dhess/core/errors.hpp"
#include "problem_impl.hpp"

namespace dhess {
namespace {

constexpr uint64_t kSeed = 20240601;
constexpr char kPrefix[] = "builtin:";

// PyTorch's default initialisation bound for Linear and Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch::Tensor uniform_init(at::IntArrayRef shape, int64_t fan_in, at::Generator& gen) {
  double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  return (torch::rand(shape, gen, torch::kFloat64) * 2 - 1) * bound;
}

// Trainable parameters, as nn.Module's: a built-in model has no frozen layers.
torch::jit::Module layer(const char* kind, torch::Tensor weight, torch::Tensor bias) {
  weight.requires_grad_(true);
  bias.requires_grad_(true);
  torch::jit::Module m(kind);
  m.register_parameter("weight", std::move(weight), false);
  m.register_parameter("bias", std::move(bias), false);
  return m;
}

int64_t parse_size(const std::string& arg, const std::string& model) {
  try {
    std::size_t used = 0;
    long v = std::stol(arg, &used);
    if (used == arg.size() && v >= 1 && v <= 4096) return v;
  } catch (const std::exception&) {
  }
  throw UsageError("--model " + model + ": size '" + arg + "' is not an integer in [1, 4096]");
}

BuiltinProblem convnet(int64_t hw, at::Generator& gen) {
  const int64_t channels = 32, classes = 5, samples = 8;
  torch::jit::Module m("dhess_convnet");
  m.register_module("c1", layer("Conv2d", uniform_init({channels, 1, 3, 3}, 9, gen), uniform_init({channels}, 9, gen)));
  const int64_t features = channels * hw * hw;
  m.register_module(
      "f2", layer("Linear", uniform_init({classes, features}, features, gen), uniform_init({classes}, features, gen)));
  m.define(R"JIT(
def forward(self, x):
    h = torch.conv2d(x, self.c1.weight, self.c1.bias, [1, 1], [1, 1])
    return torch.linear(torch.flatten(h, 1), self.f2.weight, self.f2.bias)
)JIT");
  BuiltinProblem p{m, torch::randn({samples, 1, hw, hw}, gen, torch::kFloat64),
                   torch::randint(0, classes, {samples}, gen, torch::kLong), Loss::cross_entropy, ""};
  p.description = "builtin convnet: Conv2d(1,32,3,1,1) -> flatten -> Linear(" + std::to_string(features) +
                  ",5), cross-entropy on 8 random 1x" + std::to_string(hw) + "x" + std::to_string(hw) + " images";
  return p;
}

BuiltinProblem mlp(at::Generator& gen) {
  torch::jit::Module m("dhess_mlp");
  m.register_module("l1", layer("Linear", uniform_init({10, 1}, 1, gen), uniform_init({10}, 1, gen)));
  m.register_module("l2", layer("Linear", uniform_init({10, 10}, 10, gen), uniform_init({10}, 10, gen)));
  m.register_module("l3", layer("Linear", uniform_init({1, 10}, 10, gen), uniform_init({1}, 10, gen)));
  m.define(R"JIT(
def forward(self, x):
    h = torch.tanh(torch.linear(x, self.l1.weight, self.l1.bias))
    h = torch.tanh(torch.linear(h, self.l2.weight, self.l2.bias))
    return torch.linear(h, self.l3.weight, self.l3.bias)
)JIT");
  auto x = torch::linspace(-10, 10, 1000, torch::kFloat64).unsqueeze(1);
  auto y = 2 * x + 3 + 3 * torch::sin(x) * torch::sqrt(torch::abs(x)) + torch::cos(x + 3);
  return {m, x, y, Loss::mse,
          "builtin mlp: 1-10-10-1 tanh, MSE fit of 2x+3+3sin(x)sqrt|x|+cos(x+3) on 1000 points of "
          "[-10,10]"};
}

}  // namespace

std::vector<std::string> builtin_model_names() {
  return {
      "builtin:convnet[:HW] (Conv2d(1,32,3,1,1)->flatten->Linear(32*HW*HW,5), HW=12 default, "
      "n=23365)",
      "builtin:mlp (1-10-10-1 tanh MLP, n=141)"};
}

bool is_builtin(const std::string& model) { return model.rfind(kPrefix, 0) == 0; }

BuiltinProblem make_builtin(const std::string& model) {
  std::string rest = model.substr(sizeof(kPrefix) - 1);
  std::string name = rest.substr(0, rest.find(':'));
  std::string arg = rest.find(':') == std::string::npos ? "" : rest.substr(rest.find(':') + 1);
  auto gen = at::detail::createCPUGenerator(kSeed);
  if (name == "convnet") return convnet(arg.empty() ? 12 : parse_size(arg, model), gen);
  if (name == "mlp" && arg.empty()) return mlp(gen);
  std::string known;
  for (const auto& b : builtin_model_names()) known += (known.empty() ? "" : "; ") + b;
  throw UsageError("unknown built-in model '" + model + "'; known: " + known);
}

}  // namespace dhess
