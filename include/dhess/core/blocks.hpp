#pragma once
// Blocks of parameters for per-block curvature: each parameter tensor, each module (a name's
// prefix), or named groups of regular expressions. A block's rows and columns of the curvature
// matrix are its parameters' ranges of the flattened vector.
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "dhess/core/layout.hpp"

namespace dhess {

struct BlockSpec {
  enum class Kind { none, tensors, modules, groups };
  Kind kind = Kind::none;
  int depth = 0;  // modules: the first `depth` components of a name (0: all but the last)
  std::vector<std::pair<std::string, std::regex>> groups;  // groups: a parameter joins the first that matches
  std::string text;                                        // as given, for messages
};

struct ParameterBlock {
  std::string name;
  std::vector<std::string> parameters;
  std::vector<std::pair<int64_t, int64_t>> ranges;  // [begin, end) in the flattened vector, ascending
  int64_t size = 0;
};

// The blocks of `layout` in first-appearance order; with groups, the parameters no group matches
// form a last block "other". Throws UsageError for a group that matches no parameter.
std::vector<ParameterBlock> group_parameters(const ParameterLayout& layout, const BlockSpec& spec);

// What one block's curvature is: its trace, the trace's share of the whole, its largest eigenvalues.
struct BlockCurvature {
  ParameterBlock block;
  double trace = 0;
  double trace_stderr = 0;  // 0 where the trace is exact
  bool trace_exact = true;
  std::vector<double> top;  // descending
  std::string top_method;   // how the top eigenvalues were found
};
// blocks.json's and summary.json's "blocks": every block with its share of `total_trace`.
nlohmann::json blocks_json(const std::vector<BlockCurvature>& blocks, double total_trace);
// The printed table: block, parameters, n, trace (share), top eigenvalues.
std::string blocks_table(const std::vector<BlockCurvature>& blocks, double total_trace);

}  // namespace dhess
