#pragma once
// What the dense run reports about the spectrum it found: statistics, per-parameter shares of the
// eigenvectors, and self-checks against fresh Hessian-vector products (not the assembled matrix).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "dhess/core/layout.hpp"
#include "dhess/linalg/eigensolver.hpp"
#include "dhess/run/setup.hpp"
#include "dhess/torch/hvp.hpp"

namespace dhess {

// Counts, extremes, the top and bottom ten, with the zero band `relative_zero` · max|λ|.
nlohmann::json eigenvalue_summary(const std::vector<double>& ascending, const EigenRequest& request,
                                  double relative_zero);

// Residuals ‖Hz − λz‖/norm of a few eigenpairs (the extremes and a middle one) with Hz from fresh
// HVPs, and the orthogonality of those eigenvectors. Collective.
template <typename T>
nlohmann::json self_check(const Rank& r, HvpEngine& engine, const Spectrum<T>& s, double norm);

// shares[i · tensors + p] = part of eigenvector i's squared norm inside parameter tensor p,
// for the m vectors from column `first`. Collective.
template <typename T>
std::vector<double> parameter_shares(const Rank& r, const BlockCyclicMatrix<T>& z, int64_t first, int64_t m,
                                     const ParameterLayout& layout);
// The shares of the `few` top and bottom eigenvectors by parameter name, for summary.json.
nlohmann::json shares_json(const std::vector<double>& shares, const std::vector<double>& values,
                           const ParameterLayout& layout, int64_t few);

}  // namespace dhess
