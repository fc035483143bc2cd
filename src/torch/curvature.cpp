// The three curvature graphs. Every product runs backward passes over graphs kept from one forward
// pass, so that vmap batches it like the Hessian's: the Jacobian-vector product J·v, which reverse
// mode does not give directly, is the derivative of Jᵀu (linear in a dummy u) in u along v.
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>

#include "dhess/core/errors.hpp"
#include "problem_impl.hpp"

namespace dhess {
namespace {

using Tensors = std::vector<torch::Tensor>;

Tensors grad(const Tensors& outputs, const Tensors& inputs, const Tensors& grad_outputs, bool create_graph = false) {
  return torch::autograd::grad(outputs, inputs, grad_outputs, /*retain_graph=*/true, create_graph,
                               /*allow_unused=*/true);
}

// The entries of `tensors` within the span's vector that depend on the parameters, and the
// matching entries of `v`.
struct Selected {
  Tensors outputs, vectors;
};
Selected depending(const Tensors& tensors, const Tensors& v, const ProductSpan& span) {
  Selected s;
  for (std::size_t i = span.vector_begin; i < std::min(tensors.size(), span.vector_end); ++i)
    if (tensors[i].defined() && tensors[i].requires_grad()) s.outputs.push_back(tensors[i]), s.vectors.push_back(v[i]);
  return s;
}

// The derivatives of `outputs` along `vectors` in the span's rows, undefined in the others.
Tensors rows_of(const Tensors& params, const Tensors& outputs, const Tensors& vectors, const ProductSpan& span) {
  const std::size_t first = std::min(span.rows_from, params.size());
  const Tensors wanted(params.begin() + static_cast<std::ptrdiff_t>(first), params.end());
  Tensors result(params.size());
  if (wanted.empty()) return result;
  const Tensors r = grad(outputs, wanted, vectors);
  std::copy(r.begin(), r.end(), result.begin() + static_cast<std::ptrdiff_t>(first));
  return result;
}

// H·v = ∂(∇L·v)/∂θ along the gradient's own graph.
class HessianGraph : public CurvatureGraph {
 public:
  HessianGraph(const Problem::Impl& p, const MicroBatch& batch)
      : p_(p), loss_(p.loss_of(batch)), gradient_(p.gradient_of(loss_)) {}
  torch::Tensor loss() const override { return loss_; }
  Tensors gradient() const override {
    Tensors g;
    for (const auto& t : gradient_) g.push_back(t.defined() ? t.detach() : t);
    return g;
  }
  Tensors product(const Tensors& v, const ProductSpan& span) const override {
    const Selected s = depending(gradient_, v, span);
    if (s.outputs.empty()) return Tensors(p_.params.size());
    return rows_of(p_.params, s.outputs, s.vectors, span);
  }

 private:
  const Problem::Impl& p_;
  torch::Tensor loss_;
  Tensors gradient_;  // with its graph
};

// Jᵀ M J v over `outputs` f (the model's outputs for the GGN, the loss's terms for the EF): J·v as
// the derivative of Jᵀu in u, then M, then Jᵀ.
class OuterGraph : public CurvatureGraph {
 public:
  OuterGraph(const Problem::Impl& p, torch::Tensor loss, torch::Tensor outputs)
      : p_(p), loss_(std::move(loss)), outputs_(std::move(outputs)) {
    dummy_ = torch::zeros_like(outputs_).requires_grad_(true);
    transposed_ = grad({outputs_}, p_.params, {dummy_}, /*create_graph=*/true);
  }
  torch::Tensor loss() const override { return loss_; }
  Tensors gradient() const override { return grad({loss_}, p_.params, {}); }
  Tensors product(const Tensors& v, const ProductSpan& span) const override {
    const Selected s = depending(transposed_, v, span);
    if (s.outputs.empty()) return Tensors(p_.params.size());
    const torch::Tensor jv = grad(s.outputs, {dummy_}, s.vectors)[0];
    return rows_of(p_.params, {outputs_}, {middle(jv)}, span);
  }

 protected:
  // M·w for w shaped like the outputs.
  virtual torch::Tensor middle(const torch::Tensor& w) const = 0;

  const Problem::Impl& p_;
  torch::Tensor loss_, outputs_;

 private:
  torch::Tensor dummy_;
  Tensors transposed_;  // Jᵀu with its graph in u
};

// The generalized Gauss-Newton matrix: M = H_L, the Hessian of the weighted loss in the outputs.
class GaussNewtonGraph : public OuterGraph {
 public:
  GaussNewtonGraph(const Problem::Impl& p, const Evaluation& e) : OuterGraph(p, e.loss, e.outputs) {
    output_gradient_ = grad({loss_}, {outputs_}, {}, /*create_graph=*/true)[0];
  }

 protected:
  torch::Tensor middle(const torch::Tensor& w) const override {
    // A loss linear in the outputs (nll of log-probabilities) has H_L = 0.
    if (!output_gradient_.requires_grad()) return torch::zeros_like(w);
    const torch::Tensor hw = grad({output_gradient_}, {outputs_}, {w})[0];
    return hw.defined() ? hw : torch::zeros_like(w);
  }

 private:
  torch::Tensor output_gradient_;  // ∂L/∂f with its graph
};

// The empirical Fisher: over the loss's terms ℓ, M = scale·I (loss = scale·Σℓ).
class EmpiricalFisherGraph : public OuterGraph {
 public:
  EmpiricalFisherGraph(const Problem::Impl& p, const Evaluation& e, LossTerms terms)
      : OuterGraph(p, e.loss, std::move(terms.terms)), scale_(terms.scale) {}

 protected:
  torch::Tensor middle(const torch::Tensor& w) const override { return w * scale_; }

 private:
  double scale_;
};

}  // namespace

const char* curvature_name(Curvature curvature) {
  switch (curvature) {
    case Curvature::hessian: return "hessian";
    case Curvature::ggn: return "ggn";
    case Curvature::ef: return "ef";
  }
  return "?";
}

const char* curvature_title(Curvature curvature) {
  switch (curvature) {
    case Curvature::hessian: return "Hessian";
    case Curvature::ggn: return "Gauss-Newton matrix";
    case Curvature::ef: return "empirical Fisher";
  }
  return "?";
}

std::unique_ptr<CurvatureGraph> Problem::Impl::curvature_graph(const MicroBatch& batch) const {
  if (spec.curvature == Curvature::hessian) return std::make_unique<HessianGraph>(*this, batch);
  const Evaluation e = evaluate(batch);
  if (!e.loss.requires_grad())
    throw InputError("the loss does not depend on any selected parameter (check --params and the model)");
  try {
    if (spec.curvature == Curvature::ggn) return std::make_unique<GaussNewtonGraph>(*this, e);
    return std::make_unique<EmpiricalFisherGraph>(*this, e, loss_terms(e.outputs, batch));
  } catch (const c10::Error& err) {
    throw no_second_derivative(err);
  } catch (const std::runtime_error& err) {  // autograd's NotImplemented node throws these
    throw no_second_derivative(err);
  }
}

}  // namespace dhess
