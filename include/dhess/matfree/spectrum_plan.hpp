#pragma once
// The memory per rank of `dhess spectrum`, decided before the first product and the same on every
// rank: the process with its first-order graph, the batched products (their width fitted to the
// memory left, from the memory per column measured on the model), and the largest phase.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "dhess/core/memory.hpp"
#include "dhess/dist/row_shard.hpp"
#include "dhess/run/options.hpp"
#include "dhess/torch/hvp.hpp"

namespace dhess {

struct SpectrumPlan {
  int64_t product_columns = 1;  // vectors per batched product
  bool slq_reorthogonalize = true;
  int64_t lanczos_basis = 0;  // Lanczos vectors held at most (fewer than its steps: restarted)
  int64_t trace_chunk = 1;    // trace probes held (with their products) at a time
  double column = 0;          // bytes of one more vector in a product (measured + its two n-vectors)
  double product = 0;         // bytes a product holds whatever its width (measured)
  double single = 0;          // bytes of a product of one vector, which takes its own path (measured)
  double baseline = 0;        // the process: torch, model, data shard, first-order graph
  double products = 0;        // product + product_columns · column
  double lanczos = 0, slq = 0, trace = 0, diagonal = 0;  // each phase's vectors
  int64_t basis_columns = 0;                             // --nonzero: the most basis vectors what is left holds
  double nonzero = 0;  // --nonzero: the basis, its products and a sketch block at that size
  double total = 0, available = 0;
  std::string available_source;
  nlohmann::json to_json() const;
};

// Measures the model's memory per column on this rank's data shard (`engine`; builds its graph),
// takes the largest over ranks, and fits the product width to `budget` (agreed by all ranks):
// at most --panel (64 by default). The measuring products are of `startup`'s vectors where given
// (HvpEngine::measure_column_bytes), and those it keeps are counted in the process. Collective.
SpectrumPlan plan_spectrum(const SpectrumOptions& so, const RowShard& shard, HvpEngine& engine, Dtype dtype,
                           int64_t max_columns, const MemoryBudget& budget, MPI_Comm comm,
                           StartupProducts* startup = nullptr);
// Why the plan does not fit (even one vector per product), with the numbers.
std::string spectrum_refusal(const SpectrumPlan& plan, Dtype dtype);

}  // namespace dhess
