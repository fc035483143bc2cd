#pragma once
// ParameterLayout: where each parameter tensor lives in the flattened vector
// that indexes the rows and columns of the Hessian.
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace dhess {

struct ParameterInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // first row/column of this parameter in H
  int64_t size = 0;    // number of elements (product of shape)
  // Other names of the same tensor (tied weights): named_parameters() lists a shared
  // tensor once per name, the layout once, under its first name.
  std::vector<std::string> aliases;
  // requires_grad=False in the model as saved (a frozen layer): H covers it all the same, as
  // torch.autograd.functional.hessian over every parameter would; --params leaves it out.
  bool frozen = false;
};

class ParameterLayout {
 public:
  ParameterLayout() = default;
  // Appends a parameter after the existing ones.
  void add(std::string name, std::vector<int64_t> shape, std::vector<std::string> aliases = {}, bool frozen = false);

  int64_t n() const { return n_; }
  const std::vector<ParameterInfo>& parameters() const { return params_; }
  // Index of the parameter that owns flattened index j.
  std::size_t owner_of(int64_t j) const;
  // The first flattened index of each parameter, ascending.
  std::vector<int64_t> offsets() const;
  // Index of the parameter called `name` (or aliased so); throws if absent.
  std::size_t index_of(const std::string& name) const;
  // Names of the parameters frozen in the model (requires_grad=False), layout order.
  std::vector<std::string> frozen() const;

  nlohmann::json to_json() const;
  // Human-readable table (name, shape, offset, size, aliases).
  std::string table() const;

 private:
  std::vector<ParameterInfo> params_;
  int64_t n_ = 0;
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace dhess
