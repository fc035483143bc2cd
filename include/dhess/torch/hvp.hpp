#pragma once
// HvpEngine: Hessian-vector products and Hessian columns of a Problem.
// Panels are column-major n×k arrays, the form the assembler streams into the
// block-cyclic matrix.
#include <cstdint>
#include <memory>
#include <string>

#include "dhess/torch/problem.hpp"

namespace dhess {

enum class BatchMode { automatic, batched, one_column };

struct HvpOptions {
  int64_t panel = 0;  // columns per pass; 0 = 64 until fit_panel_to() measures the model
  BatchMode mode = BatchMode::automatic;
  std::string compiled;  // --compiled: AOTInductor packages of `dhess compile` (a .pt2 or a directory)
};

class HvpEngine {
 public:
  HvpEngine(Problem& problem, const HvpOptions& options);
  ~HvpEngine();

  int64_t n() const;
  int64_t panel_width() const;
  // The memory one more column of a batched product takes (its vector, its product and the
  // backward temporaries, which grow with the model's activations), measured on the model as the
  // bytes torch takes for a product of one column and of two; builds the first-order graph first.
  // Never below 4 n-vectors. Under --hvp-mode auto it also times the products, and takes one vector
  // per pass where batching costs more per vector (mode_description() says so).
  double measure_column_bytes();
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

  // H[:, j0:j1) into `panel` (column-major, leading dimension n).
  void columns(int64_t j0, int64_t j1, double* panel);
  void columns(int64_t j0, int64_t j1, float* panel);
  // out = H·V for k column-major vectors (n×k) in float64.
  void apply(const double* v, int64_t k, double* out);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dhess
