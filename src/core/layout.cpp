#include "dhess/core/layout.hpp"

#include <algorithm>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dhess/core/errors.hpp"

namespace dhess {

void ParameterLayout::add(std::string name, std::vector<int64_t> shape, std::vector<std::string> aliases, bool frozen) {
  int64_t size = 1;
  for (auto d : shape) size *= d;
  params_.push_back({std::move(name), std::move(shape), n_, size, std::move(aliases), frozen});
  n_ += size;
}

std::size_t ParameterLayout::owner_of(int64_t j) const {
  auto it = std::upper_bound(params_.begin(), params_.end(), j,
                             [](int64_t v, const ParameterInfo& p) { return v < p.offset; });
  return static_cast<std::size_t>(it - params_.begin()) - 1;
}

std::vector<int64_t> ParameterLayout::offsets() const {
  std::vector<int64_t> o;
  for (const auto& p : params_) o.push_back(p.offset);
  return o;
}

std::size_t ParameterLayout::index_of(const std::string& name) const {
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (params_[i].name == name ||
        std::find(params_[i].aliases.begin(), params_[i].aliases.end(), name) != params_[i].aliases.end())
      return i;
  throw UsageError("no parameter named '" + name + "' in the layout");
}

std::vector<std::string> ParameterLayout::frozen() const {
  std::vector<std::string> names;
  for (const auto& p : params_)
    if (p.frozen) names.push_back(p.name);
  return names;
}

nlohmann::json ParameterLayout::to_json() const {
  nlohmann::json params = nlohmann::json::array();
  for (const auto& p : params_)
    params.push_back({{"name", p.name},
                      {"shape", p.shape},
                      {"offset", p.offset},
                      {"size", p.size},
                      {"aliases", p.aliases},
                      {"requires_grad", !p.frozen}});
  return {
      {"n", n_},
      {"order", "named_parameters() order, each tensor once (tied names are aliases), flattened row-major (C order)"},
      {"parameters", params}};
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) s << (i ? "," : "") << shape[i];
  s << ']';
  return s.str();
}

std::string ParameterLayout::table() const {
  std::size_t width = 4;
  for (const auto& p : params_) width = std::max(width, p.name.size());
  std::ostringstream s;
  s << std::left << std::setw(static_cast<int>(width)) << "name"
    << "  " << std::setw(18) << "shape" << std::right << std::setw(12) << "offset" << std::setw(12) << "size" << '\n';
  for (const auto& p : params_) {
    s << std::left << std::setw(static_cast<int>(width)) << p.name << "  " << std::setw(18) << shape_string(p.shape)
      << std::right << std::setw(12) << p.offset << std::setw(12) << p.size;
    for (std::size_t a = 0; a < p.aliases.size(); ++a) s << (a ? ", " : "  also named ") << p.aliases[a];
    if (p.frozen) s << "  requires_grad=False in the model";
    s << '\n';
  }
  s << "n = " << n_ << " parameters\n";
  return s.str();
}

}  // namespace dhess
