#include "dhess/core/blocks.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "dhess/core/errors.hpp"

namespace dhess {
namespace {

// "enc.layers.0.linear1.weight" -> "enc.layers.0.linear1" (depth 0: all but the last component),
// "enc.layers" (depth 2); a name without a module is its own.
std::string module_of(const std::string& name, int depth) {
  std::vector<std::size_t> dots;
  for (std::size_t at = name.find('.'); at != std::string::npos; at = name.find('.', at + 1)) dots.push_back(at);
  if (dots.empty()) return name;
  const std::size_t cut = depth > 0 && static_cast<std::size_t>(depth) < dots.size() ? dots[depth - 1] : dots.back();
  return name.substr(0, cut);
}

std::string block_of(const ParameterInfo& p, const BlockSpec& spec) {
  switch (spec.kind) {
    case BlockSpec::Kind::tensors: return p.name;
    case BlockSpec::Kind::modules: return module_of(p.name, spec.depth);
    case BlockSpec::Kind::groups:
      for (const auto& [name, pattern] : spec.groups) {
        if (std::regex_search(p.name, pattern)) return name;
        for (const auto& alias : p.aliases)
          if (std::regex_search(alias, pattern)) return name;
      }
      return "other";
    case BlockSpec::Kind::none: break;
  }
  throw InternalError("parameter blocks asked without --blocks");
}

std::string number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", v);
  return text;
}

}  // namespace

std::vector<ParameterBlock> group_parameters(const ParameterLayout& layout, const BlockSpec& spec) {
  std::vector<ParameterBlock> blocks;
  std::map<std::string, std::size_t> index;
  for (const auto& p : layout.parameters()) {
    const std::string name = block_of(p, spec);
    auto [at, fresh] = index.emplace(name, blocks.size());
    if (fresh) blocks.push_back({name, {}, {}, 0});
    ParameterBlock& b = blocks[at->second];
    b.parameters.push_back(p.name);
    if (!b.ranges.empty() && b.ranges.back().second == p.offset)
      b.ranges.back().second += p.size;
    else
      b.ranges.emplace_back(p.offset, p.offset + p.size);
    b.size += p.size;
  }
  // The unmatched parameters go last, after the groups in the order given.
  if (spec.kind == BlockSpec::Kind::groups) {
    for (const auto& [name, pattern] : spec.groups)
      if (index.count(name) == 0)
        throw UsageError("--blocks '" + spec.text + "': group '" + name + "' matches no parameter");
    std::stable_partition(blocks.begin(), blocks.end(), [](const ParameterBlock& b) { return b.name != "other"; });
  }
  return blocks;
}

nlohmann::json blocks_json(const std::vector<BlockCurvature>& blocks, double total_trace) {
  nlohmann::json all = nlohmann::json::array();
  for (const auto& b : blocks) {
    nlohmann::json ranges = nlohmann::json::array();
    for (const auto& [begin, end] : b.block.ranges) ranges.push_back({begin, end});
    nlohmann::json j = {{"name", b.block.name},
                        {"parameters", b.block.parameters},
                        {"ranges", ranges},
                        {"n", b.block.size},
                        {"trace", b.trace},
                        {"trace_exact", b.trace_exact},
                        {"trace_share", total_trace != 0 ? b.trace / total_trace : 0.0},
                        {"top", b.top},
                        {"top_method", b.top_method}};
    if (!b.trace_exact) j["trace_stderr"] = b.trace_stderr;
    all.push_back(j);
  }
  return all;
}

std::string blocks_table(const std::vector<BlockCurvature>& blocks, double total_trace) {
  std::string text = "  per block: trace (share of the whole), largest eigenvalues of the block\n";
  for (const auto& b : blocks) {
    std::string line = "    " + b.block.name + " (n = " + std::to_string(b.block.size) + "): trace " + number(b.trace);
    if (!b.trace_exact) line += " +- " + number(b.trace_stderr);
    if (total_trace != 0) line += " (" + number(100 * b.trace / total_trace) + "%)";
    if (!b.top.empty()) {
      line += ", top";
      for (double v : b.top) line += " " + number(v);
    }
    text += line + "\n";
  }
  return text;
}

}  // namespace dhess
