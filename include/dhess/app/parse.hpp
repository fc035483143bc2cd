#pragma once
// Flag text → typed options: the only place that reads a flag's text. Each throws UsageError
// naming the flag and the values it takes.
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "dhess/run/options.hpp"

namespace dhess {

// "values", "all", "top:K", "bottom:K", "none".
EigenRequest parse_eigen_request(const std::string& text);
Solver parse_solver(const std::string& text);
// "RxC" with R·C = ranks.
std::pair<int, int> parse_grid(const std::string& text, int ranks);
Dtype parse_dtype(const std::string& text);
Loss parse_loss(const std::string& text);
// "hessian", "ggn" (or "gauss_newton"), "ef" (or "empirical_fisher").
Curvature parse_curvature(const std::string& text);
// --blocks: "tensors", "modules", "modules:DEPTH", or "NAME=REGEX;NAME=REGEX...".
BlockSpec parse_blocks(const std::string& text);
// --prior-precision: a comma-separated list of positive numbers.
std::vector<double> parse_prior_precisions(const std::string& text);
BatchMode parse_hvp_mode(const std::string& text);
DeviceChoice parse_device(const std::string& text);
DiagonalMode parse_diagonal(const std::string& text);
TraceEstimator parse_trace_estimator(const std::string& text);
// Bytes: "4000000000", "4G", "4GB", "4GiB", "512M", "1.5T" (K, M, G, T are 1000-based, KiB, MiB,
// GiB, TiB 1024-based).
double parse_bytes(const std::string& flag, const std::string& text);
// --params: an ECMAScript regular expression, matched anywhere in a name (std::regex_search).
std::regex parse_params(const std::string& text);

}  // namespace dhess
