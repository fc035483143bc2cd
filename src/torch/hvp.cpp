// Hessian-vector products against a retained first-order graph. The batched
// path runs k products in one backward pass through LibTorch's functorch vmap
// machinery (internal API, pinned to LibTorch 1.13; kept to this file).
#include "dhess/torch/hvp.hpp"

#include <ATen/functorch/BatchedTensorImpl.h>
#include <ATen/functorch/DynamicLayer.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "compiled.hpp"
#include "device_memory.hpp"
#include "dhess/core/errors.hpp"
#include "dhess/core/memory.hpp"
#include "problem_impl.hpp"

namespace dhess {
namespace {

// One vmap level; popped on every exit path, since the level stack is process-global.
class VmapLevel {
 public:
  explicit VmapLevel(int64_t batch)
      : level_(at::functorch::initAndPushDynamicLayer(at::functorch::TransformType::Vmap, batch,
                                                      at::functorch::RandomnessType::Error)) {}
  ~VmapLevel() { at::functorch::popDynamicLayerAndDeleteMetadata(); }
  VmapLevel(const VmapLevel&) = delete;
  VmapLevel& operator=(const VmapLevel&) = delete;
  int64_t level() const { return level_; }

 private:
  int64_t level_;
};

std::vector<int64_t> with_batch(int64_t k, at::IntArrayRef shape) {
  std::vector<int64_t> s{k};
  s.insert(s.end(), shape.begin(), shape.end());
  return s;
}

}  // namespace

struct HvpEngine::Impl {
  Problem::Impl& p;
  int64_t n = 0;
  int64_t panel = 1;
  bool batched = true;
  bool automatic = true;     // --hvp-mode auto: batched unless it costs more per vector
  bool panel_given = false;  // --panel: its width stands
  std::string reason;        // why the one-column path is used
  bool verified = false;           // the eager batched path was checked
  bool verified_compiled = false;  // and the batched path through the packages
  double column_bytes = 0;                    // measured by measure_column_bytes(): what each column of a product adds
  double product_bytes = 0;                   // and what a product holds whatever its width
  double single_bytes = 0;                    // a product of one vector (the unbatched path)
  double at_a = 0, at_b = 0;                  // while measuring: the peaks of products of 2 and 4 vectors
  int64_t panel_asked = 1;                    // while measuring: the panel before it
  int64_t measured = 0;                       // while measuring: the vectors with products, from the first
  StartupProducts* startup = nullptr;         // while measuring: the caller's vectors, or none
  std::string device_fit;                     // on a GPU: what its memory holds (fit_to_device)
  std::unique_ptr<CompiledProduct> compiled;  // --compiled: its packages that fit the run
  std::string compiled_note;                  // why --compiled is not (or not always) used
  bool use_compiled = true;                   // false while a panel of columns takes the eager product
  double compiled_per_column = 0;             // seconds (0: not timed)
  int64_t compiled_calls = 0;                 // panels of columns through the packages
  int64_t eager_columns_taken = 0;            // columns the eager product made beside the packages
  std::vector<double> eager_per_column;       // seconds, by a panel's first parameter (0: not timed)

  explicit Impl(Problem::Impl& problem)
      : p(problem), n(problem.layout.n()), eager_per_column(problem.layout.parameters().size(), 0.0) {}

  torch::TensorOptions tensor_options() const { return torch::TensorOptions().dtype(p.scalar_type).device(p.device); }

  // The curvature graph of a micro-batch: kept across products when there is one micro-batch.
  std::unique_ptr<CurvatureGraph> cached;
  const CurvatureGraph& graph(const MicroBatch& batch, std::unique_ptr<CurvatureGraph>& scratch) {
    if (p.batches.size() == 1) {
      if (!cached) cached = p.first_graph ? std::move(p.first_graph) : p.curvature_graph(batch);
      return *cached;
    }
    scratch = p.curvature_graph(batch);
    return *scratch;
  }

  // v: per-parameter [k, *shape] tensors. Returns per-parameter [k, *shape] C·v for one micro-batch.
  std::vector<torch::Tensor> product_one_batch(const CurvatureGraph& g, const std::vector<torch::Tensor>& v, int64_t k,
                                               bool use_vmap, const ProductSpan& span) {
    std::vector<torch::Tensor> result(p.params.size());
    if (use_vmap) {
      VmapLevel layer(k);
      std::vector<torch::Tensor> batched;
      for (const auto& t : v) batched.push_back(at::functorch::addBatchDim(t, 0, layer.level()));
      const auto r = g.product(batched, span);
      for (std::size_t i = 0; i < r.size(); ++i) {
        if (!r[i].defined()) continue;
        auto* b = at::functorch::maybeGetBatchedImpl(r[i]);
        if (b && b->level() == layer.level())
          result[i] = b->value().movedim(b->bdim(), 0);
        else  // the same for every vector of the panel
          result[i] = r[i].unsqueeze(0).expand(with_batch(k, p.params[i].sizes()));
      }
    } else {
      // The results' memory is taken before the first product: each product's temporaries are
      // freed below what stays, and the heap does not creep up by a product per column (appending the
      // results column by column did, on ResNet-20 with 52 columns a call).
      for (std::size_t i = 0; i < p.params.size(); ++i)
        result[i] = torch::zeros(with_batch(k, p.params[i].sizes()), tensor_options());
      for (int64_t c = 0; c < k; ++c) {
        std::vector<torch::Tensor> column;
        for (const auto& t : v) column.push_back(t[c]);
        const auto r = g.product(column, span);
        for (std::size_t i = 0; i < r.size(); ++i)
          if (r[i].defined()) result[i][c].copy_(r[i]);
      }
    }
    for (std::size_t i = 0; i < result.size(); ++i)
      if (!result[i].defined()) result[i] = torch::zeros(with_batch(k, p.params[i].sizes()), tensor_options());
    return result;
  }

  // A package's first product is checked against the eager product of its first vector: a package
  // compiled for another model of the same parameters must cost speed, never correctness.
  // The package computes every row; the check compares the span's.
  std::vector<torch::Tensor> compiled_product(CompiledProduct::Package& package, const MicroBatch& batch,
                                              const std::vector<torch::Tensor>& v, int64_t k, const ProductSpan& span) {
    auto r = compiled->product(package, batch, v, k);
    if (CompiledProduct::verified(package)) return r;
    std::vector<torch::Tensor> probe;
    for (const auto& t : v) probe.push_back(t.narrow(0, 0, 1));
    const auto ref = product_one_batch(*p.curvature_graph(batch), probe, 1, false, span);
    const auto [err, scale] = first_vector_difference(r, ref, span.rows_from);
    if (err <= tolerance() * std::max(scale, 1e-30)) {
      CompiledProduct::verified(package) = true;
      return r;
    }
    compiled_note = "the compiled product disagreed with the eager one (relative " + std::to_string(err / scale) +
                    "): compiled for another model?";
    compiled->drop(package);
    return {};
  }

  std::vector<torch::Tensor> product_of_batch(const MicroBatch& batch, std::unique_ptr<CurvatureGraph>& scratch,
                                              const std::vector<torch::Tensor>& v, int64_t k, bool use_vmap,
                                              const ProductSpan& span) {
    auto* package = compiled && use_compiled ? compiled->find(batch) : nullptr;
    if (package) {
      auto r = compiled_product(*package, batch, v, k, span);
      if (!r.empty()) return r;
    }
    return product_one_batch(graph(batch, scratch), v, k, use_vmap, span);
  }

  std::vector<torch::Tensor> hvp(const std::vector<torch::Tensor>& v, int64_t k, bool use_vmap,
                                 const ProductSpan& span = {}) {
    std::vector<torch::Tensor> total;
    std::unique_ptr<CurvatureGraph> scratch;
    for (const auto& batch : p.batches) {
      auto part = product_of_batch(batch, scratch, v, k, use_vmap, span);
      if (total.empty()) {
        total = std::move(part);
      } else {
        for (std::size_t i = 0; i < total.size(); ++i) total[i] = total[i] + part[i];
      }
    }
    if (total.empty())  // a shard without data contributes nothing
      for (const auto& t : p.params) total.push_back(torch::zeros(with_batch(k, t.sizes()), tensor_options()));
    return total;
  }

  // Unit vectors e_j0 ... e_j1-1 split by parameter; parts away from the panel are stride-0 zeros.
  std::vector<torch::Tensor> unit_panel(int64_t j0, int64_t k) const {
    std::vector<torch::Tensor> parts;
    for (std::size_t i = 0; i < p.params.size(); ++i) {
      const auto& info = p.layout.parameters()[i];
      auto shape = with_batch(k, p.params[i].sizes());
      int64_t lo = std::max(j0, info.offset), hi = std::min(j0 + k, info.offset + info.size);
      if (lo >= hi) {
        parts.push_back(torch::zeros({}, tensor_options()).expand(shape));
        continue;
      }
      auto part = torch::zeros({k, info.size}, tensor_options());
      part.narrow(0, lo - j0, hi - lo)
          .narrow(1, lo - info.offset, hi - lo)
          .copy_(torch::eye(hi - lo, tensor_options()));
      parts.push_back(part.view(shape));
    }
    return parts;
  }

  void scatter(const std::vector<torch::Tensor>& parts, int64_t k, torch::Tensor out) const {
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const auto& info = p.layout.parameters()[i];
      out.narrow(1, info.offset, info.size).copy_(parts[i].reshape({k, info.size}));
    }
  }

  // The largest difference between the first vector's products in `r` and `ref` (in the rows of
  // parameters from `rows_from` on), and the largest entry of `ref`'s: what a batched or compiled
  // product is checked by.
  static std::pair<double, double> first_vector_difference(const std::vector<torch::Tensor>& r,
                                                           const std::vector<torch::Tensor>& ref,
                                                           std::size_t rows_from = 0) {
    double err = 0, scale = 0;
    for (std::size_t i = rows_from; i < r.size(); ++i) {
      err = std::max(err, (r[i][0] - ref[i][0]).abs().max().item<double>());
      scale = std::max(scale, ref[i][0].abs().max().item<double>());
    }
    return {err, scale};
  }

  double tolerance() const { return p.scalar_type == torch::kFloat64 ? 1e-8 : 1e-3; }

  // The first batched panel is checked against one column computed without vmap (`first`, where
  // the caller has it): a missing or wrong batching rule must cost speed, never correctness.
  std::vector<torch::Tensor> batched_or_fallback(const std::vector<torch::Tensor>& v, int64_t k,
                                                 const std::vector<torch::Tensor>* first, const ProductSpan& span) {
    bool& checked = compiled && use_compiled ? verified_compiled : verified;
    try {
      auto r = hvp(v, k, true, span);
      if (checked) return r;
      std::vector<torch::Tensor> ref;
      if (first) {
        ref = *first;
      } else {
        std::vector<torch::Tensor> probe;
        for (const auto& t : v) probe.push_back(t.narrow(0, 0, 1));
        ref = hvp(probe, 1, false, span);
      }
      const auto [err, scale] = first_vector_difference(r, ref);
      if (err <= tolerance() * std::max(scale, 1e-30) || (scale == 0 && err == 0)) {
        checked = true;
        return r;
      }
      reason =
          "the batched product disagreed with the one-column product (relative " + std::to_string(err / scale) + ")";
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      reason = "an operation of the model has no vmap batching rule: " + first_line(e.what());
    }
    batched = false;
    return hvp(v, k, false, span);
  }

  // The products of k vectors given as per-parameter parts; `first` as in batched_or_fallback.
  std::vector<torch::Tensor> product(const std::vector<torch::Tensor>& v, int64_t k,
                                     const std::vector<torch::Tensor>* first = nullptr,
                                     const ProductSpan& span = {}) {
    return (batched && k > 1) ? batched_or_fallback(v, k, first, span) : hvp(v, k, false, span);
  }

  // k full n-vectors (vector c at v + c n, float64) as per-parameter [k, *shape] tensors.
  std::vector<torch::Tensor> parts_of(const double* v, int64_t k) const {
    auto in = torch::from_blob(const_cast<double*>(v), {k, n}, torch::kFloat64).to(tensor_options());
    std::vector<torch::Tensor> parts;
    for (std::size_t i = 0; i < p.params.size(); ++i) {
      const auto& info = p.layout.parameters()[i];
      parts.push_back(in.narrow(1, info.offset, info.size).reshape(with_batch(k, p.params[i].sizes())));
    }
    return parts;
  }

  void compute(int64_t j0, int64_t j1, torch::Tensor out) {
    if (j0 < 0 || j1 > n || j0 > j1)
      throw InternalError("column range [" + std::to_string(j0) + ", " + std::to_string(j1) + ") outside [0, " +
                          std::to_string(n) + ")");
    for (int64_t s = j0; s < j1; s += panel) {
      const int64_t k = std::min(panel, j1 - s);
      const ProductSpan span = column_span(s, k);
      const bool eager = eager_columns(span);
      // A first call (the package's kernels loaded, the batched path checked) is not timed.
      const bool warm = eager ? verified || !batched || k == 1 : compiled_calls++ > 0;
      const auto start = std::chrono::steady_clock::now();
      use_compiled = !eager;
      const auto r = product(unit_panel(s, k), k, nullptr, span);
      use_compiled = true;
      scatter(r, k, out.narrow(0, s - j0, k));  // into host memory: on a GPU, waits for the product
      if (eager && compiled) eager_columns_taken += k;
      double& timed = eager ? eager_per_column[span.rows_from] : compiled_per_column;
      if (compiled && warm && timed <= 0)
        timed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / k;
    }
  }

  // A compiled product costs the same for every panel of columns (it computes every row), an eager
  // one less the later the panel's first parameter (fewer rows to differentiate): each is timed on
  // its first panels (the package once, the eager product once per first parameter), then the
  // faster taken.
  bool eager_columns(const ProductSpan& span) const {
    if (!compiled || compiled_per_column <= 0) return !compiled;
    const double eager = eager_per_column[span.rows_from];
    return eager <= 0 || eager < compiled_per_column;
  }

  // Columns [s, s + k) of a symmetric C: unit vectors within the parameters they fall in, and the
  // rows from the first of those on, which hold the lower triangle (the assembler mirrors the rest).
  ProductSpan column_span(int64_t s, int64_t k) const {
    const std::size_t first = p.layout.owner_of(s);
    return {first, p.layout.owner_of(s + k - 1) + 1, first};
  }
};

HvpEngine::HvpEngine(Problem& problem, const HvpOptions& options) : impl_(std::make_unique<Impl>(problem.impl())) {
  Impl& e = *impl_;
  e.panel = std::max<int64_t>(1, std::min(options.panel > 0 ? options.panel : 64, e.n));
  e.batched = options.mode != BatchMode::one_column;
  e.automatic = options.mode == BatchMode::automatic;
  e.panel_given = options.panel > 0;
  if (!e.batched) e.reason = "--hvp-mode one_column";
  if (options.compiled.empty()) return;
  e.compiled = CompiledProduct::open(options.compiled, e.p, e.compiled_note);
  if (e.compiled) e.compiled_note = e.compiled->coverage(e.p.batches);
  if (e.compiled && e.compiled->packages() == 0) e.compiled.reset();
}

namespace {

// Batching several vectors into one backward pass pays where it amortizes the pass (small layers,
// GPUs). On a CPU a convolution's double backward costs about as much per vector batched as alone,
// and more memory; and one product's time varies by a fifth from one product to the next (ResNet-20,
// 200 images on 2 ranks: single products 1.2-1.7 s; a 52-probe trace at 4 vectors per pass 1.45 s
// per vector, 1.18 s alone, after the start-up had timed 4 within 10% of one). So where a product
// takes long enough to time (50 ms), batching is kept only where it saved a fifth per vector, and
// the run takes one vector per pass otherwise. Exact either way.
bool timed(const HvpEngine::Impl& e, double single_seconds) {
  return e.automatic && e.batched && single_seconds >= 0.05;
}
bool batching_pays(const HvpEngine::Impl& e, double batched_seconds, double single_seconds) {
  return !timed(e, single_seconds) || batched_seconds < 0.8 * single_seconds;
}
void prefer_the_faster_path(HvpEngine::Impl& e, double batched_seconds, double single_seconds) {
  if (batching_pays(e, batched_seconds, single_seconds)) return;
  char text[160];
  std::snprintf(text, sizeof text, "batched products took %.3g s per vector on this model, one alone %.3g s",
                batched_seconds, single_seconds);
  e.batched = false;
  e.reason = text;
}

// What each column of a product adds and what a product holds whatever its width, from the peaks
// of products of a and b columns; each column at least `floor`.
struct ProductMemory {
  double column = 0, product = 0;
};
ProductMemory product_memory(double at_a, double at_b, int64_t a, int64_t b, double floor) {
  ProductMemory m;
  m.column = std::max(b > a ? (at_b - at_a) / static_cast<double>(b - a) : at_a / static_cast<double>(a), floor);
  m.product = std::max(0.0, at_a - static_cast<double>(a) * m.column);
  return m;
}

// An n × k panel in the problem's dtype for products whose results are not kept.
struct ScratchPanel {
  std::vector<char> bytes;
  torch::Tensor tensor;
  ScratchPanel(const HvpEngine::Impl& e, int64_t k)
      : bytes(static_cast<std::size_t>(k * e.n) * (e.p.scalar_type == torch::kFloat64 ? 8 : 4)),
        tensor(torch::from_blob(bytes.data(), {k, e.n}, e.p.scalar_type)) {}
};

// On a GPU a product's tensors are in device memory, which the host's plan neither sees nor
// bounds: the widest panel the device's free memory holds, measured like the host's (device peaks
// of products of a and b columns) and held at the margin the host plan keeps.
int64_t fit_to_device(HvpEngine::Impl& e, int64_t a, int64_t b) {
  constexpr double kMargin = 1.3;  // identical products peak differently (spectrum_plan.cpp)
  const ScratchPanel out(e, b);
  auto peak = [&](int64_t k) {
    return device_peak_bytes_of(e.p.device, [&] { e.compute(0, k, out.tensor.narrow(0, 0, k)); });
  };
  const double at_a = peak(a);
  const ProductMemory m = product_memory(at_a, b > a ? peak(b) : at_a, a, b, 1.0);
  const double free = device_free_bytes(e.p.device);
  const double fits = (0.9 * free / kMargin - m.product) / m.column;
  if (fits < 1)
    throw ResourceError("one Hessian-vector product needs " + human_bytes(kMargin * (m.product + m.column)) + " on " +
                        e.p.device.str() + " but " + human_bytes(free) +
                        " is free there: use --batch-size (fewer samples per pass), more ranks, or --device cpu");
  e.device_fit = e.p.device.str() + ": " + human_bytes(m.column) + " per column, " + human_bytes(m.product) +
                 " per product, " + human_bytes(free) + " free";
  return static_cast<int64_t>(std::min(fits, static_cast<double>(e.n)));
}

// The vectors the measuring products take: the caller's, whose products are kept for it, or unit
// vectors (columns of H, the dense run's products), whose are not.
class MeasuringVectors {
 public:
  MeasuringVectors(HvpEngine::Impl& e, int64_t width) : e_(e), startup_(e.startup), scratch_(e, width) {}

  // The parts of vectors [first, first + k) (unit vectors within the first n where n is small).
  std::vector<torch::Tensor> parts(int64_t first, int64_t k) const {
    if (startup_) return e_.parts_of(startup_->vectors.data() + first * e_.n, k);
    return e_.unit_panel(std::min(first, e_.n - k), k);
  }
  // The products kept are those of vectors 0, 1, ... without a gap: a gap would be kept as zeros.
  void keep(int64_t first, int64_t k, const std::vector<torch::Tensor>& products) {
    if (first > e_.measured) throw InternalError("a measuring product skipped vector " + std::to_string(e_.measured));
    e_.measured = std::max(e_.measured, first + k);
    if (!startup_) return e_.scatter(products, k, scratch_.tensor.narrow(0, 0, k));
    e_.scatter(products, k, torch::from_blob(startup_->products.data() + first * e_.n, {k, e_.n}, torch::kFloat64));
    startup_->made = e_.measured;
  }

 private:
  HvpEngine::Impl& e_;
  StartupProducts* startup_;
  ScratchPanel scratch_;
};

// The peak bytes of the product of measuring vectors [first, first + k) (peak_bytes_of), and its
// seconds; its result into `result` where given; `reference`: the first vector's product alone.
double peak_of_product(HvpEngine::Impl& e, MeasuringVectors& vectors, int64_t first, int64_t k, double& seconds,
                       std::vector<torch::Tensor>* result = nullptr,
                       const std::vector<torch::Tensor>* reference = nullptr) {
  return peak_bytes_of([&] {
    const auto start = std::chrono::steady_clock::now();
    auto r = e.product(vectors.parts(first, k), k, reference);
    vectors.keep(first, k, r);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (result) *result = std::move(r);
  });
}

// The first-order graph is built (and kept, where there is one micro-batch) before anything is
// measured or timed: it is the process's memory, not a product's, and builds the kernels' state.
void build_first_graph(HvpEngine::Impl& e) {
  if (e.p.batches.empty()) return;
  std::unique_ptr<CurvatureGraph> scratch;
  e.graph(e.p.batches.front(), scratch);
}

// The compiled product computes the loss and its gradient anew with every call; the eager one keeps
// the first-order graph across products where a rank has one micro-batch, and then pays only the
// second backward pass (ResNet-20, 100 images a rank: 1.34-1.67 s per compiled product, 1.03 s eager).
// Where a product takes long enough to time, a product of the package's width is timed both ways,
// each on its second call (a first call of the package took 3.4 s against 1.3 s after), and the
// faster kept.
void keep_the_faster_product(HvpEngine::Impl& e) {
  if (!e.compiled) return;
  const int64_t width = std::min(e.compiled->width(), e.n), saved = e.panel;
  e.panel = width;
  const ScratchPanel out(e, width);
  const auto seconds_of = [&] {
    const auto start = std::chrono::steady_clock::now();
    e.compute(0, width, out.tensor);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  seconds_of();  // the package's first call loads its kernels and is checked against the eager product
  const double compiled = seconds_of();
  std::unique_ptr<CompiledProduct> kept = std::move(e.compiled);
  double eager = compiled;
  if (compiled >= 0.05) {
    seconds_of();
    eager = seconds_of();
  }
  e.panel = saved;
  if (eager < 0.9 * compiled) {
    char text[200];
    std::snprintf(text, sizeof text,
                  "a product of %lld vectors took %.3g s eager, %.3g s compiled (which recomputes the gradient)",
                  static_cast<long long>(width), eager, compiled);
    e.compiled_note = text;
    return;
  }
  e.compiled = std::move(kept);
  if (compiled >= 0.05) {  // both timed: columns take the faster per panel
    e.compiled_per_column = compiled / static_cast<double>(width);
    e.eager_per_column[0] = eager / static_cast<double>(width);
    return;
  }
  e.cached.reset();  // the compiled product needs no graph
}

}  // namespace

// The measuring products' widths: one vector alone, a batched, b batched.
constexpr int64_t kPair = 2, kQuad = 4;

HvpEngine::ProductTimes HvpEngine::measure_first_products(StartupProducts* startup, int64_t widest) {
  Impl& e = *impl_;
  const int64_t a = std::min(kPair, e.n), b = std::min(kQuad, e.n);
  const bool given = startup && startup->count >= 1 + a + b &&
                     startup->vectors.size() == static_cast<std::size_t>(startup->count * e.n);
  e.startup = given ? startup : nullptr;
  if (e.startup) {
    e.startup->made = 0;
    e.startup->products.assign(static_cast<std::size_t>((1 + a + b) * e.n), 0.0);
  }
  e.panel_asked = e.panel;
  e.panel = b;
  e.measured = 0;
  build_first_graph(e);
  keep_the_faster_product(e);
  // The peaks of a product of one vector (which takes its own path), of a columns (batched, and
  // checked against the first vector alone) and of b columns give what each column adds and what a
  // product holds whatever its width: torch's tensors and all else (oneDNN's scratch memory, the
  // autograd bookkeeping).
  MeasuringVectors vectors(e, a);
  std::vector<torch::Tensor> first;
  ProductTimes t;
  double seconds = 0;
  e.single_bytes = peak_of_product(e, vectors, 0, 1, t.single, &first);
  // (A GPU sizes its panel from batched products anyway, and batches cheaply: it keeps the path.)
  if (widest <= kMeasuringVectors && e.batched && e.automatic && !e.p.device.is_cuda()) {
    e.batched = false;
    e.reason = "no product of this run is wide enough for batching to pay its measuring";
  }
  if (!e.batched) {  // one vector per pass: the pair would take the same path
    t.batched = t.single;
    return t;
  }
  e.at_a = e.at_b = peak_of_product(e, vectors, 0, a, seconds, nullptr, &first);
  t.batched = seconds / static_cast<double>(a);
  // The first product also pays for first calls, so its time is high: where batching looks worth
  // it beside it, one vector alone is timed again, on the vector after the pair.
  if (batching_pays(e, t.batched, t.single))
    e.single_bytes = std::max(e.single_bytes, peak_of_product(e, vectors, e.measured, 1, t.single));
  return t;
}

HvpEngine::ProductTimes HvpEngine::measure_wider_product(const ProductTimes& agreed) {
  Impl& e = *impl_;
  const int64_t a = std::min(kPair, e.n), b = std::min(kQuad, e.n);
  if (!e.batched || b <= a || !batching_pays(e, agreed.batched, agreed.single)) return agreed;
  MeasuringVectors vectors(e, b);
  double seconds = 0;
  e.at_b = peak_of_product(e, vectors, e.measured, b, seconds);
  return {agreed.single, seconds / static_cast<double>(b)};
}

void HvpEngine::choose_product_path(const ProductTimes& agreed) {
  Impl& e = *impl_;
  const int64_t a = std::min(kPair, e.n), b = std::min(kQuad, e.n);
  if (e.startup) {  // the products not made are not held
    e.startup->products.resize(static_cast<std::size_t>(e.startup->made * e.n));
    e.startup->products.shrink_to_fit();
    e.startup = nullptr;
  }
  const std::size_t element = e.p.scalar_type == torch::kFloat64 ? 8 : 4;
  const double floor = 4.0 * static_cast<double>(e.n) * static_cast<double>(element);
  e.single_bytes = std::max(e.single_bytes, floor);
  const int64_t device_fits = e.p.device.is_cuda() ? fit_to_device(e, a, b) : e.n;
  e.panel = e.panel_given ? e.panel_asked : std::min(e.panel_asked, device_fits);
  if (e.compiled && !e.panel_given) e.panel = std::min(e.panel, e.compiled->width());  // a product's width
  prefer_the_faster_path(e, agreed.batched, agreed.single);
  // Never below the vector, its product and the backward temporaries: 4 n-vectors. One column per
  // pass holds one product's memory whatever the width (its temporaries), and each column only its
  // vector and its product: 2 n-vectors (4 overstated ResNet-20's 52-vector trace by 0.2 GB a rank).
  const double own = 2.0 * static_cast<double>(e.n) * static_cast<double>(element);
  const ProductMemory m =
      e.batched ? product_memory(e.at_a, e.at_b, a, b, floor) : ProductMemory{own, std::max(0.0, e.single_bytes - own)};
  e.column_bytes = m.column;
  e.product_bytes = m.product;
}

double HvpEngine::measure_column_bytes(StartupProducts* startup) {
  choose_product_path(measure_wider_product(measure_first_products(startup)));
  return impl_->column_bytes;
}

double HvpEngine::measure_product_bytes(int64_t k) {
  Impl& e = *impl_;
  k = std::max<int64_t>(1, std::min(k, e.n));
  const int64_t saved = e.panel;
  e.panel = k;
  const ScratchPanel out(e, k);
  const double peak = peak_bytes_of([&] { e.compute(0, k, out.tensor); });
  e.panel = saved;
  return peak;
}

double HvpEngine::product_bytes() const { return impl_->product_bytes; }
double HvpEngine::single_product_bytes() const { return impl_->single_bytes; }

double HvpEngine::column_bytes() const { return impl_->column_bytes; }

void HvpEngine::fit_panel_to(std::size_t budget_bytes) {
  Impl& e = *impl_;
  const double per_column = measure_column_bytes();
  const int64_t fits = static_cast<int64_t>((static_cast<double>(budget_bytes) - e.product_bytes) / per_column);
  e.panel = std::max<int64_t>(1, std::min<int64_t>({e.panel, fits, e.n}));
}

void HvpEngine::narrow_panel_to(int64_t width) { impl_->panel = std::max<int64_t>(1, std::min(width, impl_->panel)); }

HvpEngine::~HvpEngine() = default;
int64_t HvpEngine::n() const { return impl_->n; }
int64_t HvpEngine::panel_width() const { return impl_->panel; }

std::string HvpEngine::mode_description() const {
  const Impl& e = *impl_;
  const std::string device = e.device_fit.empty() ? "" : "; " + e.device_fit;
  // Every column of H by the eager product: the packages were timed and lost on every panel.
  const bool packaged = e.compiled && e.compiled->packages() > 0;
  const bool outrun = packaged && e.eager_columns_taken >= e.n;
  if (packaged && !outrun)
    return "compiled (AOTInductor, " + e.compiled->method() + ", " + std::to_string(e.compiled->width()) +
           " vectors per product, " + std::to_string(e.panel) + " columns per pass" +
           (e.compiled_note.empty() ? "" : "; " + e.compiled_note) +
           (e.eager_columns_taken > 0 ? "; " + std::to_string(e.eager_columns_taken) +
                                            " Hessian columns by the eager product, faster for their panels"
                                      : "") +
           device + ")";
  std::string eager = e.compiled_note.empty() ? "" : "; eager: " + e.compiled_note;
  if (outrun) eager = "; eager: faster than the compiled package on every panel of Hessian columns";
  if (e.batched) return "batched (vmap, " + std::to_string(e.panel) + " columns per pass" + eager + device + ")";
  return "one column per pass (" + e.reason + eager + device + ")";
}

void HvpEngine::columns(int64_t j0, int64_t j1, double* panel) {
  if (impl_->p.scalar_type != torch::kFloat64) throw InternalError("float64 panel requested from a float32 problem");
  impl_->compute(j0, j1, torch::from_blob(panel, {j1 - j0, impl_->n}, torch::kFloat64));
}

void HvpEngine::columns(int64_t j0, int64_t j1, float* panel) {
  if (impl_->p.scalar_type != torch::kFloat32) throw InternalError("float32 panel requested from a float64 problem");
  impl_->compute(j0, j1, torch::from_blob(panel, {j1 - j0, impl_->n}, torch::kFloat32));
}

void HvpEngine::apply(const double* v, int64_t k, double* out) {
  Impl& e = *impl_;
  e.scatter(e.product(e.parts_of(v, k), k), k, torch::from_blob(out, {k, e.n}, torch::kFloat64));
}

}  // namespace dhess
