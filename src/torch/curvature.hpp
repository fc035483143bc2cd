#pragma once
// The curvature matrices a run multiplies with, one micro-batch at a time: the Hessian of the
// loss, the generalized Gauss-Newton matrix Jᵀ H_L J (J: the Jacobian of the model's outputs,
// H_L: the Hessian of the loss in them) and the empirical Fisher (the mean of per-term gradient
// outer products). The HVP engine and the first pass see only CurvatureGraph; make_curvature_graph
// is the one place that asks which curvature the run computes.
#include <torch/torch.h>

#include <cstddef>
#include <limits>
#include <memory>
#include <vector>

namespace dhess {

struct MicroBatch;

// Which part of C·v a product computes, by parameter index: v is zero outside [vector_begin,
// vector_end), so only the gradient's entries there are differentiated; and the rows of the
// parameters before `rows_from` are not wanted (left undefined). The autograd engine then skips the
// graph that reaches neither: Hessian columns of the later layers never pass through the earlier
// layers' second-order backward.
struct ProductSpan {
  std::size_t vector_begin = 0, vector_end = std::numeric_limits<std::size_t>::max(), rows_from = 0;
};

// One micro-batch's graph, built once and reused by every product with it.
class CurvatureGraph {
 public:
  virtual ~CurvatureGraph() = default;
  // The micro-batch's weighted loss (its share of the whole data set's mean), a scalar.
  virtual torch::Tensor loss() const = 0;
  // Its gradient per parameter; undefined where the loss does not use the parameter.
  virtual std::vector<torch::Tensor> gradient() const = 0;
  // C·v, with v given per parameter (shaped like it, or batched under vmap); an entry is undefined
  // where C's rows of that parameter are zero or outside `span`. The graph is kept for the next product.
  virtual std::vector<torch::Tensor> product(const std::vector<torch::Tensor>& v, const ProductSpan& span = {}) const = 0;
};

}  // namespace dhess
