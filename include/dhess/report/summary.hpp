#pragma once
// What a run reports: eigenvalue statistics and the human summary printed on rank 0.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dhess {

struct EigenStats {
  double tolerance = 0;  // |λ| ≤ tolerance counts as zero
  int64_t negative = 0, zero = 0, positive = 0;
  double largest = 0, smallest = 0;
};
// relative_tolerance × max|λ| is the zero band.
EigenStats eigen_stats(const std::vector<double>& ascending, double relative_tolerance);
nlohmann::json to_json(const EigenStats& stats);

// A number in three significant digits, as "%.3g" prints it: 2.2e-13, 0.125, 1.4e+03.
std::string scientific(double v);

// log det(C + delta I) = sum of log(lambda_i + delta) over all n eigenvalues of C, for each prior
// precision delta (the normalizer a Laplace approximation needs): summary.json's "log_determinants".
// Where lambda_min + delta <= 0 the shifted matrix is not positive definite and log_det is null.
nlohmann::json log_determinants(const std::vector<double>& ascending, const std::vector<double>& deltas);
// "  log det(C + delta I): delta 0.1 -> 123.4; ..."
std::string log_determinant_text(const nlohmann::json& log_determinants);

// Multi-line report for rank 0's stdout, from a summary.json object.
std::string human_summary(const nlohmann::json& summary);

}  // namespace dhess
