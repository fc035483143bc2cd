#include "dhess/matfree/spectrum_plan.hpp"

#include <algorithm>

#include "dhess/core/memory.hpp"

namespace dhess {

nlohmann::json SpectrumPlan::to_json() const {
  return {{"product_columns", product_columns},
          {"slq_reorthogonalize", slq_reorthogonalize},
          {"lanczos", lanczos},
          {"slq", slq},
          {"products", products},
          {"process", baseline},
          {"total", total},
          {"available", available}};
}

// The Lanczos basis and Ritz vectors (sharded), the SLQ bases, and two full n-vectors per column
// of a product.
SpectrumPlan plan_spectrum(const SpectrumOptions& so, const RowShard& shard, int64_t panel, const MemoryBudget& budget,
                           MPI_Comm comm) {
  SpectrumPlan p;
  const int64_t n = shard.n;
  p.baseline = static_cast<double>(current_rss_bytes());
  p.available = budget.bytes;
  p.available_source = budget.source;
  // Ranks must agree on every choice derived from memory (chunking, reorthogonalization).
  MPI_Allreduce(MPI_IN_PLACE, &p.baseline, 1, MPI_DOUBLE, MPI_MAX, comm);
  const double row_bytes = 8.0 * static_cast<double>(shard.rows());
  const int64_t steps = std::min(so.max_steps, n);
  p.lanczos = row_bytes * static_cast<double>(steps + 1 + so.top + so.bottom);
  p.product_columns =
      std::max<int64_t>(1, std::min<int64_t>(panel, static_cast<int64_t>(0.1 * p.available / (16.0 * n))));
  p.products = 16.0 * static_cast<double>(n) * static_cast<double>(p.product_columns);
  p.slq = row_bytes * static_cast<double>(so.slq_probes * std::min(so.slq_steps, n));
  p.slq_reorthogonalize = p.baseline + p.lanczos + p.products + p.slq <= 0.8 * p.available;
  if (!p.slq_reorthogonalize) p.slq = row_bytes * static_cast<double>(2 * so.slq_probes);
  p.total = p.baseline + std::max(p.lanczos, p.slq) + p.products;
  return p;
}

std::string spectrum_refusal(const SpectrumOptions& so, const RowShard& shard, const SpectrumPlan& p) {
  return "the matrix-free run needs " + human_bytes(p.total) + " per rank (Lanczos basis " + human_bytes(p.lanczos) +
         " for " + std::to_string(std::min(so.max_steps, shard.n)) + " steps, products " + human_bytes(p.products) +
         ", process " + human_bytes(p.baseline) + ") but " + human_bytes(p.available) + " is available per rank (" +
         p.available_source + "); use more ranks or a smaller --max-steps";
}

}  // namespace dhess
