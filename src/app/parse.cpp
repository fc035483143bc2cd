#include "dhess/app/parse.hpp"

#include <cmath>
#include <map>
#include <regex>
#include <sstream>

#include "dhess/core/errors.hpp"

namespace dhess {
namespace {

template <typename T>
T one_of(const std::string& flag, const std::string& text, const std::map<std::string, T>& values,
         const std::string& names) {
  const auto it = values.find(text);
  if (it == values.end()) throw UsageError(flag + " '" + text + "' is not one of " + names);
  return it->second;
}

}  // namespace

EigenRequest parse_eigen_request(const std::string& text) {
  EigenRequest r;
  std::smatch m;
  static const std::regex range(R"((top|bottom):(\d{1,12}))");
  if (text == "none") {
    r.kind = EigenRequest::Kind::none;
  } else if (text == "values") {
    r.kind = EigenRequest::Kind::values;
  } else if (text == "all") {
    r.kind = EigenRequest::Kind::all;
  } else if (std::regex_match(text, m, range)) {
    r.kind = m[1] == "top" ? EigenRequest::Kind::top : EigenRequest::Kind::bottom;
    r.k = std::stoll(m[2]);
    if (r.k < 1) throw UsageError("--eigen " + text + ": K must be at least 1");
  } else {
    throw UsageError("--eigen '" + text + "' is not one of values, all, top:K, bottom:K, none");
  }
  return r;
}

Solver parse_solver(const std::string& text) {
  return one_of<Solver>("--solver", text,
                        {{"auto", Solver::automatic},
                         {"pdsyevd", Solver::pdsyevd},
                         {"pdsyevr", Solver::pdsyevr},
                         {"elpa", Solver::elpa},
                         {"lapack", Solver::lapack},
                         {"lowrank", Solver::lowrank}},
                        "auto, pdsyevd, pdsyevr, elpa, lapack, lowrank");
}

std::pair<int, int> parse_grid(const std::string& text, int ranks) {
  std::smatch m;
  static const std::regex form(R"((\d{1,6})[xX](\d{1,6}))");
  if (!std::regex_match(text, m, form)) throw UsageError("--grid '" + text + "' is not of the form RxC (e.g. 2x2)");
  const int rows = std::stoi(m[1]), cols = std::stoi(m[2]);
  if (rows < 1 || cols < 1 || rows * cols != ranks)
    throw UsageError("--grid " + text + " needs " + std::to_string(rows * cols) + " ranks but the job has " +
                     std::to_string(ranks));
  return {rows, cols};
}

Dtype parse_dtype(const std::string& text) {
  return one_of<Dtype>(
      "--dtype", text,
      {{"float64", Dtype::float64}, {"double", Dtype::float64}, {"float32", Dtype::float32}, {"float", Dtype::float32}},
      "float64, float32");
}

Loss parse_loss(const std::string& text) {
  return one_of<Loss>("--loss", text,
                      {{"cross_entropy", Loss::cross_entropy},
                       {"mse", Loss::mse},
                       {"nll", Loss::nll},
                       {"bce_with_logits", Loss::bce_with_logits},
                       {"none", Loss::none}},
                      "cross_entropy, mse, nll, bce_with_logits, none");
}

Curvature parse_curvature(const std::string& text) {
  return one_of<Curvature>("--curvature", text,
                           {{"hessian", Curvature::hessian},
                            {"ggn", Curvature::ggn},
                            {"gauss_newton", Curvature::ggn},
                            {"ef", Curvature::ef},
                            {"empirical_fisher", Curvature::ef}},
                           "hessian, ggn, ef");
}

BlockSpec parse_blocks(const std::string& text) {
  BlockSpec spec;
  spec.text = text;
  static const std::regex modules(R"(modules(:([1-9][0-9]*))?)");
  std::smatch m;
  if (text == "tensors") {
    spec.kind = BlockSpec::Kind::tensors;
  } else if (std::regex_match(text, m, modules)) {
    spec.kind = BlockSpec::Kind::modules;
    spec.depth = m[2].matched ? std::stoi(m[2]) : 0;
  } else {
    spec.kind = BlockSpec::Kind::groups;
    std::istringstream items(text);
    for (std::string item; std::getline(items, item, ';');) {
      const std::size_t eq = item.find('=');
      if (eq == 0 || eq == std::string::npos || eq + 1 == item.size())
        throw UsageError("--blocks '" + text + "': '" + item +
                         "' is not NAME=REGEX (use tensors, modules, modules:DEPTH, or NAME=REGEX;NAME=REGEX...)");
      try {
        spec.groups.emplace_back(item.substr(0, eq), std::regex(item.substr(eq + 1)));
      } catch (const std::regex_error& e) {
        throw UsageError("--blocks '" + text + "': '" + item.substr(eq + 1) +
                         "' is not a valid regular expression: " + e.what());
      }
    }
    if (spec.groups.empty()) throw UsageError("--blocks '' names no block");
  }
  return spec;
}

std::vector<double> parse_prior_precisions(const std::string& text) {
  std::vector<double> deltas;
  std::istringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    std::size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || !(v > 0) || !std::isfinite(v))
      throw UsageError("--prior-precision '" + text + "': '" + item + "' is not a positive number");
    deltas.push_back(v);
  }
  if (deltas.empty()) throw UsageError("--prior-precision '' gives no value");
  return deltas;
}

BatchMode parse_hvp_mode(const std::string& text) {
  return one_of<BatchMode>(
      "--hvp-mode", text,
      {{"auto", BatchMode::automatic}, {"batched", BatchMode::batched}, {"one_column", BatchMode::one_column}},
      "auto, batched, one_column");
}

DeviceChoice parse_device(const std::string& text) {
  return one_of<DeviceChoice>(
      "--device", text, {{"cpu", DeviceChoice::cpu}, {"cuda", DeviceChoice::cuda}, {"auto", DeviceChoice::automatic}},
      "cpu, cuda, auto");
}

DiagonalMode parse_diagonal(const std::string& text) {
  return one_of<DiagonalMode>("--diagonal", text,
                              {{"none", DiagonalMode::none},
                               {"exact", DiagonalMode::exact},
                               {"hutchinson", DiagonalMode::hutchinson},
                               {"auto", DiagonalMode::automatic}},
                              "none, exact, hutchinson, auto");
}

TraceEstimator parse_trace_estimator(const std::string& text) {
  return one_of<TraceEstimator>("--trace-estimator", text,
                                {{"hutchpp", TraceEstimator::hutchpp},
                                 {"hutchinson", TraceEstimator::hutchinson},
                                 {"both", TraceEstimator::both}},
                                "hutchpp, hutchinson, both");
}

double parse_bytes(const std::string& flag, const std::string& text) {
  static const std::regex form(R"(\s*([0-9]+(\.[0-9]*)?([eE][0-9]+)?)\s*(([KMGT])(i?)B?|B)?\s*)");
  std::smatch m;
  if (std::regex_match(text, m, form)) {
    double value = std::stod(m[1]);
    if (m[5].matched) {
      const double base = m[6].length() > 0 ? 1024.0 : 1000.0;
      value *= std::pow(base, 1 + std::string("KMGT").find(m[5].str()[0]));
    }
    if (value > 0 && std::isfinite(value)) return value;
  }
  throw UsageError(flag + " '" + text + "' is not a positive number of bytes (e.g. 4000000000, 4G, 4GiB, 512M)");
}

std::regex parse_params(const std::string& text) {
  try {
    return std::regex(text);
  } catch (const std::regex_error& e) {
    throw UsageError("--params '" + text + "' is not a valid regular expression: " + e.what());
  }
}

}  // namespace dhess
