#pragma once
// HvpEngine: Hessian-vector products and Hessian columns of a Problem.
// Panels are column-major n×k arrays, the form the assembler streams into the
// block-cyclic matrix.
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "dhess/torch/problem.hpp"

namespace dhess {

enum class BatchMode { automatic, batched, one_column };

struct HvpOptions {
  int64_t panel = 0;  // columns per pass; 0 = 64 until fit_panel_to() measures the model
  BatchMode mode = BatchMode::automatic;
  std::string compiled;  // --compiled: AOTInductor packages of `dhess compile` (a .pt2 or a directory)
};

// Vectors a caller will want the products of later (the first probes of a matrix-free run), for
// the start-up's measuring products to be made of: `vectors` holds count full n-vectors (vector c
// at c n); `products` gets this rank's products of the first `made` of them (its share of the data).
struct StartupProducts {
  std::vector<double> vectors, products;
  int64_t count = 0, made = 0;
};
// Vectors the measuring products take: one alone, two batched (the first of them the single one
// again, which checks the batched path), one alone timed again where needed, four batched.
constexpr int64_t kMeasuringVectors = 7;

class HvpEngine {
 public:
  HvpEngine(Problem& problem, const HvpOptions& options);
  ~HvpEngine();

  int64_t n() const;
  int64_t panel_width() const;
  // The memory one more column of a batched product takes (its vector, its product and the
  // backward temporaries, which grow with the model's activations), measured on the model as the
  // bytes torch takes for products of one, two and four columns (one alone where products take
  // one column per pass); builds the first-order graph
  // first. Never below 4 n-vectors. Under --hvp-mode auto it also times the products, and takes one
  // vector per pass where batching does not save a fifth per vector (mode_description() says so). The
  // products are of unit vectors, or of `startup`'s vectors where it holds kMeasuringVectors of
  // them, whose products it then keeps for the caller.
  double measure_column_bytes(StartupProducts* startup = nullptr);
  // The same in three steps, for ranks that must decide alike (each times its own products): the
  // graph, products of one vector, of two batched (and of one again where needed to time it); of four batched
  // where the times agreed so far leave batching worth it; the path and the memory per column from
  // the times agreed last. Seconds per vector of one alone and batched (the widest timed).
  // `widest`: the most vectors the caller will multiply at once. Under --hvp-mode auto on a CPU, at
  // most kMeasuringVectors (dhess spectrum's Lanczos of a few pairs) cannot pay for timing batched
  // products: one vector alone is measured and every product takes one vector per pass.
  struct ProductTimes {
    double single = 0, batched = 0;
  };
  ProductTimes measure_first_products(StartupProducts* startup = nullptr,
                                      int64_t widest = std::numeric_limits<int64_t>::max());
  ProductTimes measure_wider_product(const ProductTimes& agreed);
  void choose_product_path(const ProductTimes& agreed);
  // What measure_column_bytes() found (0 before): each column, and a product whatever its width.
  double column_bytes() const;
  double product_bytes() const;
  double single_product_bytes() const;  // a product of one vector, which takes the unbatched path
  // The peak bytes of one product of k columns itself, to check a width chosen from the two above.
  double measure_product_bytes(int64_t k);
  // Measures, then sets the panel width to what `budget_bytes` holds, at most the width asked for
  // (64 by default). Not called when --panel was given.
  void fit_panel_to(std::size_t budget_bytes);
  // At most `width` columns per pass (the narrowest panel over the ranks, so that all are equal).
  void narrow_panel_to(int64_t width);
  // "batched (vmap, k=64)" or "one column per pass (reason)".
  std::string mode_description() const;

  // H[:, j0:j1) into `panel` (column-major, leading dimension n), from the row of the first
  // parameter of each pass's columns on: H is symmetric, and the rows above (zero in `panel`) are
  // its upper triangle, which symmetrize() mirrors from the lower. Skipping them lets autograd skip
  // the earlier layers' second-order backward for the later layers' columns.
  void columns(int64_t j0, int64_t j1, double* panel);
  void columns(int64_t j0, int64_t j1, float* panel);
  // out = H·V for k column-major vectors (n×k) in float64.
  void apply(const double* v, int64_t k, double* out);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dhess
