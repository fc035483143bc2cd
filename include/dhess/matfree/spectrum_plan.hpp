#pragma once
// The memory per rank of `dhess spectrum`, decided before the first product and the same on every
// rank: how many vectors one product takes, and whether SLQ can keep its bases.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "dhess/dist/row_shard.hpp"
#include "dhess/run/options.hpp"

namespace dhess {

struct SpectrumPlan {
  int64_t product_columns = 1;  // vectors per batched product
  bool slq_reorthogonalize = true;
  double lanczos = 0, slq = 0, products = 0, baseline = 0, total = 0, available = 0;  // bytes per rank
  nlohmann::json to_json() const;
};

// `panel`: the HVP engine's batch width; `available`: this rank's budget, agreed (minimum) with
// the other ranks together with the process size (maximum). Collective.
SpectrumPlan plan_spectrum(const SpectrumOptions& so, const RowShard& shard, int64_t panel, double available,
                           MPI_Comm comm);
// Why the plan does not fit, with the numbers.
std::string spectrum_refusal(const SpectrumOptions& so, const RowShard& shard, const SpectrumPlan& plan);

}  // namespace dhess
