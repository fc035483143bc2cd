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
};

class HvpEngine {
 public:
  HvpEngine(Problem& problem, const HvpOptions& options);
  ~HvpEngine();

  int64_t n() const;
  int64_t panel_width() const;
  // Measures the memory of a few batched columns (panel and backward temporaries,
  // which grow with the model's activations) and sets the panel width to what
  // `budget_bytes` holds, at most 64. Not called when --panel was given.
  void fit_panel_to(std::size_t budget_bytes);
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
