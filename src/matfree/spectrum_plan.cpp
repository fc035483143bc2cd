#include "dhess/matfree/spectrum_plan.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "dhess/core/collective.hpp"

namespace dhess {
namespace {

// The resident memory of one product is not the same from one product to the next: 24 identical
// products of 10 vectors on a ResNet-20 shard peaked 480-794 MB above the process (glibc's heap and
// the kernel's accounting of it), so one measured product may be a low one. The plan holds products
// at 1.3 times what was measured.
constexpr double kSpread = 1.3;

// Bytes of each phase's vectors on one rank: rows of n-vectors (8 bytes each), and the full
// n-vectors rank 0 gathers to keep a phase in the checkpoint.
double row_bytes(const RowShard& shard) { return 8.0 * static_cast<double>(shard.rows()); }

void plan_phases(const SpectrumOptions& so, const RowShard& shard, SpectrumPlan& p) {
  const double row = row_bytes(shard), full = 8.0 * static_cast<double>(shard.n);
  const double pairs = static_cast<double>(so.top + so.bottom);
  // The recurrence: the basis, the next vector and the product (or the Ritz vectors beside the
  // basis); then the Ritz vectors with their products, or with the copies rank 0 gathers to keep
  // them. And the projected matrix's eigenvectors (after a restart: it, a copy, and dsyevd's 2m²
  // workspace).
  const double basis = static_cast<double>(p.lanczos_basis);
  const double recurrence = row * (basis + 1 + std::max(1.0, pairs)), ritz = std::max(row, full) * pairs + row * pairs;
  p.lanczos = pairs > 0 ? std::max(recurrence, ritz) + 32 * basis * basis : 0;
  // The Ritz vectors stay through the later phases.
  const double kept = row * pairs;
  const double probes = static_cast<double>(so.slq_probes);
  const double slq_steps = static_cast<double>(std::min(so.slq_steps, shard.n));
  // Every probe's basis (two vectors without reorthogonalization), and one block in and out.
  p.slq = probes > 0 ? kept + row * probes * ((p.slq_reorthogonalize ? slq_steps : 2) + 2) : 0;
  // Hutchinson's probes and products, a chunk at a time; Hutch++'s basis and its products whole,
  // then the rest of its probes and products a chunk at a time (trace.hpp).
  const int64_t chunk = p.trace_chunk, third = std::max<int64_t>(1, so.trace_probes / 3);
  const double hutchinson = row * 2 * static_cast<double>(std::min(so.trace_probes, chunk));
  const double hutchpp =
      row * 2 * static_cast<double>(third + std::min(std::max<int64_t>(2, so.trace_probes - 2 * third), chunk));
  p.trace = so.trace_probes == 0
                ? 0
                : kept + (so.trace_estimator == TraceEstimator::hutchinson ? hutchinson
                          : so.trace_estimator == TraceEstimator::hutchpp  ? hutchpp
                                                                           : std::max(hutchinson, hutchpp));
  // A block of unit vectors or probes in and out, the sums; the whole diagonal on rank 0.
  p.diagonal = so.diagonal == DiagonalMode::none ? 0 : kept + row * (2 * 64 + 4) + full * 2;
}

double largest_phase(const SpectrumPlan& p) { return std::max({p.lanczos, p.slq, p.trace, p.diagonal}); }

// What a phase may hold beside the process and the narrowest product.
double room_beside_one_product(const SpectrumPlan& p) {
  return p.available - p.baseline - std::max(p.single, p.product + p.column);
}

// The fewest vectors a restarted Lanczos holds: the wanted pairs, as many neighbours, and two to
// grow into. Fewer restart so often that the products go into restarts.
int64_t least_lanczos_basis(const SpectrumOptions& so) { return 2 * (so.top + so.bottom) + 2; }

// Lanczos holds --lanczos-basis vectors, or every step's where they fit beside the process and one
// product, or as many as do (restarted; at least the least basis, else the plan refuses). The
// product width is fitted afterwards to what the largest phase leaves.
void fit_lanczos_basis(const SpectrumOptions& so, const RowShard& shard, SpectrumPlan& p) {
  const int64_t steps = std::min(so.max_steps, shard.n);
  p.lanczos_basis = so.lanczos_basis > 0 ? std::min(so.lanczos_basis, steps) : steps;
  plan_phases(so, shard, p);
  const double room = room_beside_one_product(p);
  if (so.lanczos_basis > 0 || p.lanczos <= room) return;
  // The largest b with row·b + 32b² within what the rest of the recurrence leaves (plan_phases).
  const double row = row_bytes(shard);
  const double pairs = static_cast<double>(so.top + so.bottom);
  const double left = std::max(0.0, room - row * (1 + std::max(1.0, pairs)));
  const auto fits = static_cast<int64_t>(std::floor((std::sqrt(row * row + 128 * left) - row) / 64));
  p.lanczos_basis = std::min(steps, std::max(fits, least_lanczos_basis(so)));
  plan_phases(so, shard, p);
}

// The trace's probes all at once where they fit beside the process and one product, else as many
// as do at a time (one at least, else the plan refuses).
void fit_trace_chunk(const SpectrumOptions& so, const RowShard& shard, SpectrumPlan& p) {
  p.trace_chunk = std::max<int64_t>(1, so.trace_probes);
  plan_phases(so, shard, p);
  const double room = room_beside_one_product(p);
  if (p.trace <= room) return;
  const double row = row_bytes(shard);
  const double sketch =
      so.trace_estimator == TraceEstimator::hutchinson ? 0 : 2 * std::max<int64_t>(1, so.trace_probes / 3);
  const double pairs = static_cast<double>(so.top + so.bottom);
  const auto fits = static_cast<int64_t>(std::floor((room - row * (pairs + sketch)) / (2 * row)));
  p.trace_chunk = std::max<int64_t>(1, std::min(fits, p.trace_chunk));
  plan_phases(so, shard, p);
}

// The most vectors each phase hands to one product: the Ritz pairs' check, the SLQ probes in
// lockstep, the trace's probes (Hutch++: its sketch and the rest, a third and a third more), a
// block of the diagonal.
struct PhaseWidths {
  int64_t lanczos = 0, slq = 0, trace = 0, diagonal = 0;
};
PhaseWidths phase_widths(const SpectrumOptions& so, int64_t trace_chunk) {
  // Hutch++'s sketch is multiplied whole; the rest of its probes, and Hutchinson's, a chunk at a time.
  const int64_t t = std::min(so.trace_probes, trace_chunk), sketch = std::max<int64_t>(1, so.trace_probes / 3);
  const int64_t hutchpp = std::max(sketch, std::min(std::max<int64_t>(2, so.trace_probes - 2 * sketch), trace_chunk));
  PhaseWidths w;
  w.lanczos = so.top + so.bottom;
  w.slq = so.slq_probes;
  w.trace = so.trace_estimator == TraceEstimator::hutchpp      ? hutchpp
            : so.trace_estimator == TraceEstimator::hutchinson ? t
                                                               : std::max(t, hutchpp);
  w.diagonal = so.diagonal == DiagonalMode::none ? 0 : so.diagonal == DiagonalMode::hutchinson ? 16 : 64;
  return w;
}

int64_t widest_product(const SpectrumOptions& so, int64_t trace_chunk) {
  const PhaseWidths w = phase_widths(so, trace_chunk);
  return std::max<int64_t>({1, w.lanczos, w.slq, w.trace, w.diagonal});
}

// A product of k vectors at most the planned width; one vector's, which takes its own path, may be
// the larger.
double product_at(const SpectrumPlan& p, int64_t k) {
  return std::max(p.single, p.product + static_cast<double>(std::clamp<int64_t>(k, 1, p.product_columns)) * p.column);
}

// The phases run one after another: each phase's vectors beside the products it makes (Lanczos's
// steps are of one vector, its Ritz check of all pairs), the largest; at least the widest product
// (the --blocks phase, --nonzero's sketch).
double peak_of_phases(const SpectrumOptions& so, const SpectrumPlan& p) {
  const PhaseWidths w = phase_widths(so, p.trace_chunk);
  return std::max({p.products + p.nonzero, p.lanczos + product_at(p, w.lanczos), p.slq + product_at(p, w.slq),
                   p.trace + product_at(p, w.trace), p.diagonal + product_at(p, w.diagonal)});
}

// As many vectors per product as the memory left holds, at most max_columns and the widest any
// phase asks for.
void fit_product_width(const SpectrumOptions& so, int64_t max_columns, SpectrumPlan& p) {
  const double left = p.available - p.baseline - largest_phase(p) - p.product;
  const int64_t fits = static_cast<int64_t>(left / p.column);
  p.product_columns = std::max<int64_t>(1, std::min<int64_t>({max_columns, fits, widest_product(so, p.trace_chunk)}));
  // Lanczos's products are of one vector: their own measured size may be the larger.
  p.products = std::max(p.single, p.product + static_cast<double>(p.product_columns) * p.column);
}

// The column is the slope between products of 2 and 4 vectors, which glibc's heap makes noisy
// (49-66 MB on the same ResNet-20 shard, 68 MB at 14 vectors: a width fitted to the low one
// overran its budget by a third). A wider width is measured itself, and where its product is
// larger than planned the column grows to match and the width is fitted again; a few rounds at
// most, since each costs one product, and none where the width would fit at twice the column.
void check_product_width(const SpectrumOptions& so, int64_t max_columns, HvpEngine& engine, double vectors,
                         MPI_Comm comm, SpectrumPlan& p) {
  auto roomy = [&] {
    const double doubled = p.product + 2 * static_cast<double>(p.product_columns) * p.column;
    return p.baseline + largest_phase(p) + doubled <= p.available;
  };
  for (int round = 0; round < 3 && p.product_columns > 4 && !roomy(); ++round) {
    const int64_t k = p.product_columns;
    double measured = 0;
    run_collectively(comm, [&] { measured = engine.measure_product_bytes(k); });
    MPI_Allreduce(MPI_IN_PLACE, &measured, 1, MPI_DOUBLE, MPI_MAX, comm);
    const double column = (kSpread * measured - p.product) / static_cast<double>(k) + vectors;
    if (column <= p.column) return;
    p.column = column;
    fit_product_width(so, max_columns, p);
  }
}

}  // namespace

nlohmann::json SpectrumPlan::to_json() const {
  return {{"product_columns", product_columns},
          {"lanczos_basis", lanczos_basis},
          {"trace_chunk", trace_chunk},
          {"bytes_per_product_column", column},
          {"bytes_per_product", product},
          {"bytes_of_one_vector_product", single},
          {"slq_reorthogonalize", slq_reorthogonalize},
          {"process", baseline},
          {"products", products},
          {"lanczos", lanczos},
          {"slq", slq},
          {"trace", trace},
          {"diagonal", diagonal},
          {"nonzero_basis_columns", basis_columns},
          {"nonzero", nonzero},
          {"total", total},
          {"available", available},
          {"available_source", available_source}};
}

SpectrumPlan plan_spectrum(const SpectrumOptions& so, const RowShard& shard, HvpEngine& engine, Dtype dtype,
                           int64_t max_columns, const MemoryBudget& budget, MPI_Comm comm, StartupProducts* startup) {
  SpectrumPlan p;
  p.available = budget.bytes;
  p.available_source = budget.source;
  // The slowest rank's times decide for all: ranks that batch differently plan differently.
  HvpEngine::ProductTimes times;
  auto agree = [&] {
    double t[2] = {times.single, times.batched};
    MPI_Allreduce(MPI_IN_PLACE, t, 2, MPI_DOUBLE, MPI_MAX, comm);
    times.single = t[0];
    times.batched = t[1];
  };
  // Lanczos alone multiplies one vector a step and its pairs once at the end: a few pairs cannot pay
  // for timing batched products (up to 7 vectors, not the phases' own). The other phases' first
  // vectors are the measuring ones, so their measuring costs nothing.
  const bool others = so.slq_probes > 0 || so.trace_probes > 0 || so.diagonal != DiagonalMode::none || so.nonzero;
  const int64_t widest = others ? std::numeric_limits<int64_t>::max() : so.top + so.bottom;
  run_collectively(comm, [&] { times = engine.measure_first_products(startup, widest); });
  agree();
  run_collectively(comm, [&] { times = engine.measure_wider_product(times); });
  agree();
  run_collectively(comm, [&] { engine.choose_product_path(times); });
  // Every product is a collective of as many vectors on each rank: the narrowest panel, should a
  // GPU's memory have narrowed one (hvp.hpp).
  max_columns = std::min(max_columns, engine.panel_width());
  MPI_Allreduce(MPI_IN_PLACE, &max_columns, 1, MPI_INT64_T, MPI_MIN, comm);
  // The operator gathers each vector whole and reduce-scatters its product: two n-vectors, and the
  // float32 copy that goes into torch.
  const double n = static_cast<double>(shard.n);
  const double vectors = 16 * n + (dtype == Dtype::float32 ? 4 * n : 0);
  double measured[4] = {kSpread * engine.column_bytes() + vectors, kSpread * engine.product_bytes(),
                        kSpread * engine.single_product_bytes() + vectors, static_cast<double>(current_rss_bytes())};
  // Ranks agree on every choice derived from memory: the largest column, products and process.
  MPI_Allreduce(MPI_IN_PLACE, measured, 4, MPI_DOUBLE, MPI_MAX, comm);
  p.column = measured[0];
  p.product = measured[1];
  p.single = measured[2];
  p.baseline = measured[3];
  fit_lanczos_basis(so, shard, p);
  fit_trace_chunk(so, shard, p);
  // SLQ drops its per-probe bases where they are what crowds memory (not where another phase is).
  if (p.baseline + p.slq + p.column > 0.8 * p.available && so.slq_probes > 0) {
    p.slq_reorthogonalize = false;
    plan_phases(so, shard, p);
  }
  fit_product_width(so, max_columns, p);
  check_product_width(so, max_columns, engine, vectors, comm, p);
  // The range finder takes what is left: per basis vector itself, its product (kept as the sketch
  // makes it), a share of a sketch block and of its input vectors (4 rows of 8 bytes).
  if (so.nonzero) {
    const double per_vector = 32.0 * static_cast<double>(std::max<int64_t>(shard.rows(), 1));
    const double room = p.available - p.baseline - p.products - largest_phase(p);
    p.basis_columns = std::min<int64_t>(shard.n, std::max<int64_t>(0, static_cast<int64_t>(room / per_vector)));
    p.nonzero = per_vector * static_cast<double>(p.basis_columns);
  }
  p.total = p.baseline + peak_of_phases(so, p);
  return p;
}

namespace {

// What would shrink the plan: always more ranks; the knob of whatever holds a quarter of it (the
// products: fewer samples per pass; the largest phase: its own count); float32 where the run is in
// float64.
std::string spectrum_remedies(const SpectrumPlan& p, Dtype dtype) {
  std::string r = "use more ranks (each holds less data and fewer rows)";
  const double largest = largest_phase(p), quarter = p.total / 4;
  if (p.products >= quarter) r += ", --batch-size (fewer samples per product pass)";
  if (largest >= quarter && p.lanczos == largest)
    r += ", a smaller --lanczos-basis or fewer --top/--bottom (Lanczos holds at least 2(top + bottom) + 2 vectors)";
  if (largest >= quarter && p.trace == largest)
    r += ", fewer --trace-probes or --trace-estimator hutchinson (Hutch++ holds a third of its probes)";
  if (largest >= quarter && p.slq == largest) r += ", fewer --slq-probes or --slq-steps";
  if (largest >= quarter && p.diagonal == largest) r += ", --diagonal hutchinson or fewer --diagonal-probes";
  if (dtype == Dtype::float64) r += ", or --dtype float32";
  return r;
}

}  // namespace

std::string spectrum_refusal(const SpectrumPlan& p, Dtype dtype) {
  return "the matrix-free run needs " + human_bytes(p.total) + " per rank (process with its first-order graph " +
         human_bytes(p.baseline) + ", products of " + std::to_string(p.product_columns) + " vector(s) at " +
         human_bytes(p.column) + " each " + human_bytes(p.products) + ", the largest phase " +
         human_bytes(largest_phase(p)) + ": Lanczos " + human_bytes(p.lanczos) + ", SLQ " + human_bytes(p.slq) +
         ", trace " + human_bytes(p.trace) + ", diagonal " + human_bytes(p.diagonal) + ") but " +
         human_bytes(p.available) + " is available per rank (" + p.available_source + "); " +
         spectrum_remedies(p, dtype);
}

}  // namespace dhess
