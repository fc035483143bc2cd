#include "dhess/report/summary.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace dhess {

std::string scientific(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", v);
  return text;
}

nlohmann::json log_determinants(const std::vector<double>& ascending, const std::vector<double>& deltas) {
  nlohmann::json values = nlohmann::json::array();
  for (double delta : deltas) {
    const double smallest = ascending.empty() ? delta : ascending.front() + delta;
    nlohmann::json entry = {{"prior_precision", delta}, {"smallest_eigenvalue", smallest}};
    if (smallest > 0) {
      // Summed in long double: n terms of either sign, n up to millions.
      long double sum = 0;
      for (double v : ascending) sum += std::log(static_cast<long double>(v) + delta);
      entry["log_det"] = static_cast<double>(sum);
      entry["positive_definite"] = true;
    } else {
      entry["log_det"] = nullptr;
      entry["positive_definite"] = false;
      entry["eigenvalues_at_or_below_zero"] =
          std::count_if(ascending.begin(), ascending.end(), [&](double v) { return v + delta <= 0; });
    }
    values.push_back(entry);
  }
  return {{"matrix", "C + prior_precision * I, C the run's curvature of the mean loss"},
          {"eigenvalues", static_cast<int64_t>(ascending.size())},
          {"values", values}};
}

std::string log_determinant_text(const nlohmann::json& log_determinants) {
  std::string text = "  log det(C + delta I):";
  for (const auto& v : log_determinants["values"]) {
    text += " delta " + scientific(v["prior_precision"].get<double>()) + " -> ";
    text += v["log_det"].is_null() ? "not positive definite (smallest eigenvalue " +
                                         scientific(v["smallest_eigenvalue"].get<double>()) + ")"
                                   : std::to_string(v["log_det"].get<double>());
    text += ";";
  }
  text.back() = '\n';
  return text;
}

EigenStats eigen_stats(const std::vector<double>& ascending, double relative_tolerance) {
  EigenStats s;
  if (ascending.empty()) return s;
  s.smallest = ascending.front();
  s.largest = ascending.back();
  double scale = std::max(std::abs(s.smallest), std::abs(s.largest));
  s.tolerance = relative_tolerance * scale;
  for (double v : ascending) {
    if (std::abs(v) <= s.tolerance)
      ++s.zero;
    else if (v < 0)
      ++s.negative;
    else
      ++s.positive;
  }
  return s;
}

nlohmann::json to_json(const EigenStats& s) {
  return {{"negative", s.negative},        {"near_zero", s.zero},  {"positive", s.positive},
          {"zero_tolerance", s.tolerance}, {"largest", s.largest}, {"smallest", s.smallest}};
}

namespace {
std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}
std::string seconds(const nlohmann::json& v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f s", v.get<double>());
  return b;
}
}  // namespace

std::string human_summary(const nlohmann::json& j) {
  std::ostringstream s;
  const auto& t = j["timings_seconds"];
  s << "dhess: n = " << j["n"].get<int64_t>() << " parameters, " << j["ranks"].get<int>() << " rank(s), grid "
    << j["grid"][0].get<int>() << "x" << j["grid"][1].get<int>() << ", block " << j["block"].get<int>() << ", "
    << j["dtype"].get<std::string>() << "\n";
  s << "  model: " << j["model"]["description"].get<std::string>() << ", loss " << j["model"]["loss"].get<std::string>()
    << " = " << num(j["model"]["loss_value"].get<double>());
  if (j["model"].value("curvature", "hessian") != "hessian")
    s << "; curvature " << j["model"]["curvature"].get<std::string>() << " (the matrix below, not the Hessian)";
  s << "\n";
  s << "  time: HVP " << seconds(t["hvp"]) << " (" << j["hvp"]["mode"].get<std::string>() << "), redistribution "
    << seconds(t["redistribution"]);
  if (t.contains("symmetrize")) s << ", symmetrize " << seconds(t["symmetrize"]);
  s << ", eigensolver " << seconds(t["eigensolver"]);
  if (j.contains("solver")) s << " (" << j["solver"].get<std::string>() << ")";
  s << ", I/O " << seconds(t["io"]) << ", total " << seconds(t["total"]) << "\n";
  s << "  asymmetry ||H-H^T||_F/||H||_F = " << num(j["asymmetry"].get<double>())
    << ", trace = " << num(j["trace"].get<double>()) << "\n";
  if (j.contains("eigenvalues")) {
    const auto& e = j["eigenvalues"];
    s << "  eigenvalues (" << e["count"].get<int64_t>() << "): largest " << num(e["largest"].get<double>())
      << ", smallest " << num(e["smallest"].get<double>()) << "\n";
    if (e.contains("top")) {
      s << "  top:";
      for (const auto& v : e["top"]) s << " " << num(v.get<double>());
      s << "\n";
    }
    s << "  counts: " << e["negative"].get<int64_t>() << " negative, " << e["near_zero"].get<int64_t>()
      << " near zero (|lambda| <= " << num(e["zero_tolerance"].get<double>()) << "), " << e["positive"].get<int64_t>()
      << " positive\n";
  }
  if (j.contains("self_check") && j["self_check"].contains("max_residual")) {
    s << "  self-check: max ||Hz - lambda z||/||H|| = " << num(j["self_check"]["max_residual"].get<double>())
      << ", orthogonality " << num(j["self_check"]["orthogonality"].get<double>()) << "\n";
  }
  s << "  peak memory per rank: " << j["memory"]["peak_rss_max_human"].get<std::string>() << "\n";
  s << "  results in " << j["out"].get<std::string>() << ":";
  for (const auto& f : j["files"]) s << " " << f.get<std::string>();
  s << "\n";
  return s.str();
}

}  // namespace dhess
