#pragma once
// The memory per rank of `dhess spectrum`, decided before the first product and the same on every
// rank: how many vectors one product takes, and whether SLQ can keep its bases.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "dhess/core/memory.hpp"
#include "dhess/dist/row_shard.hpp"
#include "dhess/run/options.hpp"

namespace dhess {

struct SpectrumPlan {
  int64_t product_columns = 1;  // vectors per batched product
  bool slq_reorthogonalize = true;
  double lanczos = 0, slq = 0, products = 0, baseline = 0, total = 0, available = 0;  // bytes per rank
  std::string available_source;
  nlohmann::json to_json() const;
};

// `panel`: the HVP engine's batch width; `budget`: agreed by all ranks (memory_per_rank); the
// process size is agreed here (the largest). Collective.
SpectrumPlan plan_spectrum(const SpectrumOptions& so, const RowShard& shard, int64_t panel, const MemoryBudget& budget,
                           MPI_Comm comm);
// Why the plan does not fit, with the numbers.
std::string spectrum_refusal(const SpectrumOptions& so, const RowShard& shard, const SpectrumPlan& plan);

}  // namespace dhess
