#pragma once
// Hessian-vector products compiled ahead of time (`dhess compile`, python/dhess/compile.py): one
// AOTInductor package per micro-batch size, each the product of the Hessian of one micro-batch's
// weighted loss with `width` vectors at once, as a function of the parameters, the micro-batch and the
// vectors. The shapes are fixed at compile time, so a package serves only micro-batches of its shapes;
// the HVP engine takes the eager product for the others.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "problem_impl.hpp"

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace dhess {

class CompiledProduct {
 public:
  struct Package;

  // The packages at `path` (a .pt2 file, or a directory of them) that were compiled for this
  // problem: its parameters and their shapes, loss, curvature, dtype, mode, device and torch. None
  // fit: null, and `reason` says why in one line. A path that is not there is an InputError.
  static std::unique_ptr<CompiledProduct> open(const std::string& path, const Problem::Impl& problem,
                                               std::string& reason);
  ~CompiledProduct();

  int64_t width() const { return width_; }
  const std::string& method() const { return method_; }
  std::size_t packages() const { return packages_.size(); }

  // "" where every micro-batch has a package; else which have none, and the packages that have none
  // of this rank's micro-batches are closed.
  std::string coverage(const std::vector<MicroBatch>& batches);
  // The package compiled for this micro-batch's shapes, or null.
  Package* find(const MicroBatch& batch);
  // C·v on `batch` for k vectors given per parameter as [k, *shape], `width` at a time (the last
  // few padded with zeros).
  std::vector<torch::Tensor> product(Package& package, const MicroBatch& batch, const std::vector<torch::Tensor>& v,
                                     int64_t k) const;
  // Whether a package's first product was checked against the eager one; drop() takes it out.
  static bool& verified(Package& package);
  void drop(Package& package);

 private:
  explicit CompiledProduct(const Problem::Impl& problem);

  const Problem::Impl& p_;
  std::vector<std::unique_ptr<Package>> packages_;
  int64_t width_ = 0;
  std::string method_;
};

}  // namespace dhess
